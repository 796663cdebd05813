"""``epochal bench DATA``: how fast the Loader reads your own store or arrays.

Each round times the same shuffled batches twice, interleaved: through ``epochal.Loader``
and through a bare gather (the source's own batched read, no Loader). The difference per
batch is what the Loader costs on top of reading; every figure is a median over rounds
measured in the same run, so it holds on a busy machine too.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from epochal._errors import UsageError

__all__ = ["BenchConfig", "main", "measure"]


@dataclasses.dataclass(kw_only=True)
class BenchConfig:
    """Measure the Loader on your data: samples/s against a bare gather of the same batches."""

    data: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DATA")]
    """A store (a local path or an fsspec URL) or a .npy/.npz file of arrays (first dim = records)."""
    batch_size: int = 256
    """Samples per batch."""
    num_workers: int = 0
    """Loader worker processes."""
    batches: int = 100
    """Batches timed per round (fewer when an epoch has fewer)."""
    repeats: int = 3
    """Rounds; the table shows medians."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batches < 1 or self.repeats < 1 or self.num_workers < 0:
            raise UsageError(
                f"need batch_size, batches and repeats >= 1 and num_workers >= 0, got "
                f"batch_size={self.batch_size}, batches={self.batches}, "
                f"repeats={self.repeats}, num_workers={self.num_workers}"
            )


def _open(data: str) -> Any:
    """The source ``data`` names: arrays from a .npy/.npz file (memory-mapped), else a store."""
    import epochal

    if data.endswith((".npy", ".npz")):
        try:
            arrays = np.load(data, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:  # missing, not numpy, truncated
            raise UsageError(f"cannot read {data!r} as numpy arrays: {err}") from None
        columns = {Path(data).stem: arrays} if isinstance(arrays, np.ndarray) else dict(arrays)
        return epochal.from_arrays(**columns)
    return epochal.open(data)


def _gather(source: Any) -> Callable[[np.ndarray], object]:
    """The source's fastest read of a batch of indices without a Loader."""
    for name in ("get_columns", "get_many"):
        if callable(getattr(source, name, None)):
            return getattr(source, name)
    return lambda indices: [source[int(i)] for i in indices]


def measure(source: Any, cfg: BenchConfig) -> dict[str, float]:
    """Median samples/s through the Loader and through a bare gather, and the Loader's cost.

    Returns:
        ``{"loader": samples/s, "gather": samples/s, "batches": batches per round,
        "overhead_us": microseconds the Loader adds per batch}``.
    """
    import epochal

    if len(source) < cfg.batch_size:
        raise UsageError(
            f"{cfg.data} has {len(source)} records, fewer than one batch of {cfg.batch_size}"
        )
    loader = epochal.Loader(source, cfg.batch_size, seed=0, num_workers=cfg.num_workers)
    count = min(cfg.batches, len(source) // cfg.batch_size)
    # the Loader's own first batches of epoch 0 (seed 0): both contenders read these indices
    order = epochal.make_order(len(source), seed=0, epoch=0, shuffle=True)
    batches = [
        order.index(np.arange(b * cfg.batch_size, (b + 1) * cfg.batch_size, dtype=np.int64))
        for b in range(count)
    ]
    read = _gather(source)

    def through_loader() -> None:
        loader.set_epoch(0)
        stream: Iterator[object] = iter(loader)
        for _ in range(count):
            next(stream)
        del stream  # stops the workers' prefetch of the batches not timed

    def bare() -> None:
        for indices in batches:
            read(indices)

    through_loader()  # start workers, warm caches (a remote store downloads here)
    seconds: dict[str, list[float]] = {"loader": [], "gather": []}
    for _ in range(cfg.repeats):
        for name, fn in (("loader", through_loader), ("gather", bare)):
            gc.collect()
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    samples = count * cfg.batch_size
    loader_s, gather_s = (statistics.median(seconds[k]) for k in ("loader", "gather"))
    return {
        "loader": samples / loader_s,
        "gather": samples / gather_s,
        "batches": float(count),
        "overhead_us": (loader_s - gather_s) / count * 1e6,
    }


def main(argv: list[str]) -> int:
    """Run ``epochal bench``; prints one table."""
    from epochal.cli import parse_args

    cfg = parse_args(BenchConfig, argv, prog="epochal bench")
    source = _open(cfg.data)
    print(f"epochal bench: timing {cfg.data}...", file=sys.stderr, flush=True)
    result = measure(source, cfg)
    ratio = result["loader"] / result["gather"]
    print(
        f"{cfg.data}: {len(source):,} records, batch {cfg.batch_size}, "
        f"num_workers={cfg.num_workers}, {int(result['batches'])} shuffled batches, "
        f"median of {cfg.repeats}"
    )
    print(f"  epochal.Loader      {result['loader']:>12,.0f} samples/s ({ratio:.2f}x the gather)")
    print(f"  bare gather         {result['gather']:>12,.0f} samples/s (the source's own read)")
    print(f"  Loader per batch    {result['overhead_us']:>12,.0f} us on top of the gather")
    return 0
