"""Sampling benchmark (issue #5): mixture and weighted Loaders vs the plain shuffled Loader.

Usage: python benchmarks/bench_sampling.py [--records 200000] [--repeats 5] [--big 10000000]

Same data shape as the core benchmark (records of 3,072 uint8 bytes + an int64 label in a
memmap). Every configuration runs one epoch of ``--records`` samples; the runs are
interleaved round by round and each ratio is the median of the per-round ratios to the
plain Loader measured in the same round, so machine noise mostly cancels. Also times the
without-replacement per-epoch pass (keys + stable argsort) at n = ``--big``.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tyro

import epochal
from _timing import (
    _interleaved,
    _loader_epoch,
    _print_table,
    _ratio_text,
    benchmark_data,
)


@dataclasses.dataclass(kw_only=True)
class Config:
    """Options of the sampling benchmark."""

    records: int = 200_000
    """Records in the benchmark dataset (each 3,072 uint8 bytes + an int64 label)."""
    batch_size: int = 256
    """Samples per batch."""
    repeats: int = 5
    """Interleaved rounds; the table shows medians."""
    stores: bool = True
    """Also compare a mixture of two stores with one store of the same records (writes
    about twice the dataset to the work directory)."""
    big: int = 10_000_000
    """Records for the without-replacement per-epoch pass (0 skips it)."""
    workdir: Path | None = None
    """Where to write the memmap (default: a temporary directory, removed afterwards)."""


def _second_file(images: np.ndarray, directory: Path) -> np.ndarray:
    """The second half of ``images`` copied to a file of its own, after a 128-byte header
    (as in a ``.npy`` file): its records then start at no whole number of records from
    the first file's, so the mixture gathers them by byte address (the general path, see
    ``sources/_joined.py``)."""
    half = len(images) // 2
    path = directory / "second.u8"
    copy = np.memmap(path, dtype=np.uint8, mode="w+", offset=128, shape=images[half:].shape)
    copy[:] = images[half:]
    copy.flush()
    del copy
    copy = np.memmap(path, dtype=np.uint8, mode="r", offset=128, shape=images[half:].shape)
    copy.sum(dtype=np.uint64)  # page cache warm, as for the first file
    return copy


def _loaders(
    images: np.ndarray, labels: np.ndarray, second_file: np.ndarray, batch_size: int
) -> dict[str, Any]:
    n = len(labels)
    source = epochal.from_arrays(image=images, label=labels)
    half = n // 2
    first = epochal.from_arrays(image=images[:half], label=labels[:half])
    second = epochal.from_arrays(image=images[half:], label=labels[half:])
    halves = epochal.mix({first: 0.7, second: 0.3}, exhaustion="restart", samples_per_epoch=n)
    other = epochal.from_arrays(image=second_file, label=labels[half:].copy())
    files = epochal.mix({first: 0.7, other: 0.3}, exhaustion="restart", samples_per_epoch=n)
    a, b = epochal.split(source, [0.5, 0.5], seed=0)
    mixed_splits = epochal.mix({a: 0.7, b: 0.3}, exhaustion="restart", samples_per_epoch=n)
    weights = np.random.default_rng(1).random(n)
    return {
        "plain shuffled Loader": epochal.Loader(source, batch_size),
        "mix of 2 halves of one memmap, 0.7/0.3": epochal.Loader(halves, batch_size),
        "mix of 2 memmap files (unaligned), 0.7/0.3": epochal.Loader(files, batch_size),
        "mix of 2 splits of one source, 0.7/0.3": epochal.Loader(mixed_splits, batch_size),
        "WeightedSampler, replacement": epochal.Loader(
            source, batch_size, sampler=epochal.WeightedSampler(weights)
        ),
        "WeightedSampler, no replacement": epochal.Loader(
            source, batch_size, sampler=epochal.WeightedSampler(weights, replacement=False)
        ),
    }


def _store_loaders(
    images: np.ndarray, labels: np.ndarray, directory: Path, batch_size: int
) -> dict[str, Any]:
    """The same records written as one store and as two stores of one half each."""
    n, half = len(labels), len(labels) // 2

    def records(lo: int, hi: int) -> Any:
        for i in range(lo, hi):
            yield {"image": images[i], "label": labels[i]}

    epochal.write(records(0, n), directory / "all")
    epochal.write(records(0, half), directory / "first")
    epochal.write(records(half, n), directory / "second")
    first, second = epochal.open(directory / "first"), epochal.open(directory / "second")
    mixture = epochal.mix({first: 0.7, second: 0.3}, exhaustion="restart", samples_per_epoch=n)
    return {
        "one store (plain shuffled Loader)": epochal.Loader(
            epochal.open(directory / "all"), batch_size
        ),
        "mix of 2 stores, 0.7/0.3": epochal.Loader(mixture, batch_size),
    }


def _compare(loaders: dict[str, Any], base: str, repeats: int) -> list[tuple[str, str, str]]:
    """Interleaved rounds of one epoch per loader; ratios to ``base`` per round."""
    rates = _interleaved({name: _loader_epoch(loader) for name, loader in loaders.items()}, repeats)
    rows = [(base, f"{statistics.median(rates[base]):,.0f} samples/s", "")]
    for name, values in rates.items():
        if name != base:
            rows.append((name, _ratio_text(values, rates[base], "plain"), ">= 0.8x"))
    return rows


def run(cfg: Config) -> list[tuple[str, str, str]]:
    """Every measurement as (name, result, target) rows."""
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as tmp:
        images, labels = benchmark_data(Path(tmp), cfg.records)
        second_file = _second_file(images, Path(tmp))
        loaders = _loaders(images, labels, second_file, cfg.batch_size)
        rows += _compare(loaders, "plain shuffled Loader", cfg.repeats)
        # the same two files without the mixture: what the mixture itself costs
        files = loaders["mix of 2 memmap files (unaligned), 0.7/0.3"].source
        same_files = {
            "the 2 memmap files, plain shuffled Loader": epochal.Loader(
                epochal.concat(*files.sources), cfg.batch_size
            ),
            "mix of the 2 memmap files, 0.7/0.3": epochal.Loader(files, cfg.batch_size),
        }
        rows += _compare(same_files, "the 2 memmap files, plain shuffled Loader", cfg.repeats)
        del loaders, second_file, files, same_files
        if cfg.stores:
            stores = _store_loaders(images, labels, Path(tmp), cfg.batch_size)
            rows += _compare(stores, "one store (plain shuffled Loader)", cfg.repeats)
            del stores
    if cfg.big:
        weights = np.random.default_rng(2).random(cfg.big)
        sampler = epochal.WeightedSampler(weights, replacement=False)
        times = []
        for epoch in range(max(1, min(cfg.repeats, 3))):
            gc.collect()
            start = time.perf_counter()
            permutation = sampler.permutation(seed=0, epoch=epoch)
            times.append(time.perf_counter() - start)
        rows.append(
            (
                f"no-replacement epoch pass, n={cfg.big:,}",
                f"{statistics.median(times):.2f} s per epoch (min {min(times):.2f}); "
                f"permutation {permutation.nbytes / 2**20:.0f} MiB + weights "
                f"{weights.nbytes / 2**20:.0f} MiB",
                "stated O(n log n)",
            )
        )
        replacement = epochal.WeightedSampler(weights, num_samples=cfg.big)
        order = replacement.order(seed=0, epoch=0)
        positions = np.arange(min(1_000_000, cfg.big), dtype=np.int64)
        start = time.perf_counter()
        order.index(positions)
        per_index = (time.perf_counter() - start) / positions.size * 1e9
        rows.append(
            (
                f"with-replacement lookup, n={cfg.big:,}",
                f"{per_index:.0f} ns/index (indexed search, O(1) expected)",
                "",
            )
        )
    return rows


def main() -> int:
    cfg = tyro.cli(Config, description=__doc__.splitlines()[0])
    rows = run(cfg)
    _print_table(
        f"epochal sampling benchmark: {cfg.records:,} records x 3,072 B, batch "
        f"{cfg.batch_size}, median of {cfg.repeats} interleaved rounds",
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
