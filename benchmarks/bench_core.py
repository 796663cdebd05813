"""Core benchmark: the Loader vs a raw memmap gather and a naive per-sample DataLoader,
worker scaling on a CPU-bound transform, resume latency and the order's cost.

Every figure is a ratio to a baseline measured in the same run on the same data, so the
numbers mean something on a noisy shared machine.

    python benchmarks/bench_core.py                               # full size, about 20 s
    python benchmarks/bench_core.py --records 50000 --repeats 1   # quicker, rougher

It first prints the Loader's own cost per batch: a columnar source of 2M int64 records
with no transform, one shuffled epoch through the Loader against a bare
``column.take(idx, axis=0)`` + ``torch.from_numpy`` of the same batches (indices computed
beforehand), at batch sizes 256 and 1,024, interleaved, and fits ``a + b * batch_size``
to the difference; then the order's cost per index. ``--overhead-only`` stops there
(~1 min).
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from _timing import (
    _interleaved,
    _loader_epoch,
    _median_rate,
    _print_table,
    _ratio_text,
    benchmark_data,
)

OVERHEAD_RECORDS = 2_000_000  # int64 records: 16 MB, a gather that costs little per index
OVERHEAD_BATCHES = (256, 1024)
OVERHEAD_ROUNDS = 7
ORDER_BLOCK = 65_536  # positions per order call, as the Loader computes them


def _loader_pass(loader: object) -> Callable[[], int]:
    def go() -> int:
        loader.set_epoch(0)  # type: ignore[attr-defined]
        count = 0
        for _ in loader:  # type: ignore[attr-defined]
            count += 1
        return count

    return go


def _bare_epoch(column: np.ndarray, batches: list[np.ndarray]) -> Callable[[], int]:
    import torch

    def go() -> int:
        for idx in batches:
            torch.from_numpy(column.take(idx, axis=0))  # the method: no Python wrapper
        return len(batches)

    return go


def _order_pass(order: object, n: int, *, numpy_only: bool = False) -> Callable[[], int]:
    """One epoch of the order in blocks; ``numpy_only``: with the compiled kernel (the
    ``fast`` extra) hidden, so both paths are timed in the same rounds."""
    from unittest import mock

    def go() -> int:
        for lo in range(0, n, ORDER_BLOCK):
            order.index(np.arange(lo, min(n, lo + ORDER_BLOCK), dtype=np.int64))  # type: ignore[attr-defined]
        return n

    try:
        from epochal import _order_kernel
    except ImportError:  # an older tree (before/after runs): numpy is its only path
        return go
    if not numpy_only:
        return go

    def go_numpy() -> int:
        with mock.patch.object(_order_kernel, "kernels", lambda size: None):
            return go()

    return go_numpy


def _range_pass(order: object, n: int) -> Callable[[], int]:
    """One epoch of ``order.index_range`` in blocks: the Loader's one-rank path."""

    def go() -> int:
        for lo in range(0, n, ORDER_BLOCK):
            order.index_range(lo, min(n, lo + ORDER_BLOCK))  # type: ignore[attr-defined]
        return n

    return go


def _multiply_pass(n: int) -> Callable[[], int]:
    """One numpy uint64 multiply per index: the machine's speed, to read ns/index against."""
    x = np.arange(ORDER_BLOCK, dtype=np.uint64)
    c = np.uint64(0x9E3779B97F4A7C15)

    def go() -> int:
        for _ in range(0, n, ORDER_BLOCK):
            np.multiply(x, c, out=x)
        return n

    return go


def overhead(rounds: int = OVERHEAD_ROUNDS) -> list[str]:
    """The Loader's own cost per batch and the order's per index, as printable lines."""
    import epochal

    n = OVERHEAD_RECORDS
    column = np.arange(n, dtype=np.int64)
    source = epochal.from_arrays(i=column)
    order = epochal.make_order(n, seed=0, epoch=0)
    indices = np.asarray(order.index(np.arange(n, dtype=np.int64)))
    runs: dict[str, Callable[[], int]] = {}
    for b in OVERHEAD_BATCHES:
        runs[f"loader{b}"] = _loader_pass(epochal.Loader(source, b, seed=0))
        runs[f"bare{b}"] = _bare_epoch(column, [indices[a : a + b] for a in range(0, n, b)])
    runs["order"] = _order_pass(order, n)
    runs["order_numpy"] = _order_pass(order, n, numpy_only=True)
    runs["order_range"] = _range_pass(order, n)
    runs["multiply"] = _multiply_pass(n)
    for fn in runs.values():
        fn()  # warm-up
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):  # interleaved; each round starts one run later
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    try:
        from epochal import _order_kernel

        kernel = _order_kernel.kernels(_order_kernel.MIN_SIZE) is not None
    except ImportError:  # an older tree (before/after runs)
        kernel = False
    path = "numba kernel" if kernel else "numpy"
    lines = [
        f"Loader's own cost: {n:,} int64 records, from_arrays, no transform, shuffled, "
        f"{rounds} interleaved rounds, median; order path: {path}",
    ]
    for clock, times in (("wall-clock", wall), ("process CPU time", cpu)):
        lines += _overhead_lines(clock, times, n, rounds)
    return lines


def _overhead_lines(clock: str, times: dict[str, list[float]], n: int, rounds: int) -> list[str]:
    """The overhead table from one clock's times (CPU time: what this process spent, which
    the load of a shared machine disturbs far less than wall-clock time)."""

    def own_us(b: int, k: int) -> float:
        """The Loader's own microseconds per batch of size ``b`` in round ``k``."""
        batches = -(-n // b)
        return (times[f"loader{b}"][k] - times[f"bare{b}"][k]) / batches * 1e6

    small, large = OVERHEAD_BATCHES
    order_ns = [t / n * 1e9 for t in times["order"]]
    range_ns = [t / n * 1e9 for t in times["order_range"]]  # the Loader's path on one rank
    fits = []
    for k in range(rounds):
        per_sample = (own_us(large, k) - own_us(small, k)) / (large - small) * 1e3  # ns
        per_batch = own_us(small, k) - small * per_sample / 1e3  # us
        fits.append((per_batch, per_sample, per_sample - range_ns[k]))

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} (per-round {min(values):.1f}..{max(values):.1f})"

    lines = [f" {clock}:"]
    for b in OVERHEAD_BATCHES:
        bare = statistics.median(t / -(-n // b) * 1e6 for t in times[f"bare{b}"])
        lines.append(
            f"  batch {b:>5}: Loader {med([own_us(b, k) for k in range(rounds)])} us per batch "
            f"more than take + torch.from_numpy ({bare:.1f} us per batch)"
        )
    lines += [
        f"  fit a + b*batch: a = {med([f[0] for f in fits])} us per batch   [target <= 5]",
        f"                   b = {med([f[1] for f in fits])} ns per sample   [target <= 5]",
        f"                   b without the order (index_range) = {med([f[2] for f in fits])} ns"
        " per sample",
        f"  order, n={n:,}, blocks of {ORDER_BLOCK:,} positions: {med(order_ns)} ns per index"
        f"   [target <= 10]",
        f"    = {statistics.median(o / m for o, m in zip(times['order'], times['multiply'])):.1f}"
        f" numpy uint64 multiplies per index, measured in the same rounds",
        f"  order, numpy path (kernel hidden), same rounds: "
        f"{med([t / n * 1e9 for t in times['order_numpy']])} ns per index",
        f"  order.index_range (the Loader's one-rank path), same rounds: {med(range_ns)} ns per index",
    ]
    return lines


@dataclasses.dataclass(kw_only=True)
class BenchConfig:
    """Settings of the core benchmark."""

    records: int = 200_000
    """Records in the benchmark dataset (each 3,072 uint8 bytes + an int64 label)."""
    batch_size: int = 256
    """Samples per batch."""
    repeats: int = 3
    """Timed repeats of each measurement; the table shows the median."""
    naive_samples: int = 20_000
    """Samples timed for the slow per-sample PyTorch baseline (samples/s is per sample)."""
    transform_batches: int = 64
    """Batches timed with the CPU-bound transform (enough that the pipeline's start and drain at each epoch boundary are a small part)."""
    workdir: Annotated[Path | None, tyro.conf.arg(metavar="DIR|None")] = None
    """Where to write the memmap (default: a temporary directory, removed afterwards)."""
    progress: bool = True
    """Print a line on stderr as each measurement starts."""
    overhead_only: bool = False
    """Measure only the Loader's own cost per batch and the order's per index (first part)."""

    def __post_init__(self) -> None:
        from epochal._errors import UsageError

        if self.batch_size < 1 or self.records < self.batch_size or self.repeats < 1:
            raise UsageError(
                f"need batch_size >= 1, records >= batch_size and repeats >= 1, got "
                f"records={self.records}, batch_size={self.batch_size}, repeats={self.repeats}"
            )
        if self.naive_samples < 1 or self.transform_batches < 1:
            raise UsageError(
                f"need naive_samples >= 1 and transform_batches >= 1, got "
                f"{self.naive_samples} and {self.transform_batches}"
            )


class _Steps:
    """``bench_core: [k/N] what (elapsed)`` on stderr as each measurement starts."""

    TOTAL = 8

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.index = 0
        self.started = time.perf_counter()

    def __call__(self, what: str) -> None:
        self.index += 1
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(
                f"bench_core: [{self.index}/{self.TOTAL}] {what} ({elapsed:.0f}s so far)",
                file=sys.stderr,
                flush=True,
            )


def _transform_work(images: np.ndarray) -> float:
    """Seconds to run the CPU-bound transform over ``images``, one process."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for j in range(len(images)):
        _cpu_transform({"image": images[j], "label": j}, rng)
    return time.perf_counter() - start


def _child_work(images: np.ndarray, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(_transform_work(images))


def _two_process_ceiling(images: np.ndarray, repeats: int) -> list[float]:
    """Per round: throughput of 2 forked processes each running the transform over
    ``images`` (started together) over that of 1 process: the machine's own scaling."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ratios = []
    for _ in range(repeats):
        alone = _transform_work(images)
        barrier, results = context.Barrier(2), context.Queue()
        children = [
            context.Process(target=_child_work, args=(images, barrier, results)) for _ in range(2)
        ]
        for child in children:
            child.start()
        both = max(results.get(), results.get())
        for child in children:
            child.join()
        ratios.append(2 * alone / both)
    return ratios


class _PerSampleDataset:
    """The naive PyTorch way: one ``__getitem__`` per sample over the memmap."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        return torch.from_numpy(np.array(self.images[index])), int(self.labels[index])


class _TrivialSource:
    """n records that are their own index: isolates the loader's own cost."""

    deterministic = True
    fingerprint = "trivial"

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"i": index}

    def get_columns(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"i": indices}


def _cpu_transform(record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """About 100 us of numpy work per record (calibrated on an idle 2-core AMD EPYC VM)."""
    x = record["image"][:256].astype(np.float32)
    for _ in range(20):
        x = np.tanh(x * 0.01 + rng.random(x.shape[0], dtype=np.float32))
    return {"image": x, "label": record["label"]}


def run(cfg: BenchConfig) -> list[tuple[str, str, str]]:
    """Run every measurement; returns (measurement, result, target) rows."""
    import torch

    import epochal
    from epochal.order import ShuffledOrder

    rows: list[tuple[str, str, str]] = []
    step = _Steps(cfg.progress)
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as tmp:
        step(f"writing {cfg.records:,} records to a memmap")
        images, labels = benchmark_data(Path(tmp), cfg.records)
        source = epochal.from_arrays(image=images, label=labels)
        order = ShuffledOrder(cfg.records, seed=0, epoch=0)
        batches = [
            order.index(np.arange(lo, min(lo + cfg.batch_size, cfg.records)))
            for lo in range(0, cfg.records, cfg.batch_size)
        ]

        def gather(take: Callable[[np.ndarray], np.ndarray]) -> Callable[[], int]:
            def go() -> int:
                for idx in batches:
                    torch.from_numpy(take(idx))
                    torch.from_numpy(labels[idx])
                return cfg.records

            return go

        # every configuration runs once per round, interleaved, and each ratio is the
        # median of the per-round ratios: drift of a shared machine mostly cancels
        step(f"shuffled epochs: numpy gathers and the Loader, {cfg.repeats} interleaved rounds")
        loaders = {w: epochal.Loader(source, cfg.batch_size, num_workers=w) for w in (0, 2)}
        rates = _interleaved(
            {
                "fancy": gather(lambda idx: images[idx]),
                "take": gather(lambda idx: np.take(images, idx, axis=0)),
                0: _loader_epoch(loaders[0]),
                2: _loader_epoch(loaders[2]),
            },
            cfg.repeats,
        )
        del loaders
        rows.append(
            (
                "numpy memmap gather, images[idx] (baseline)",
                f"{statistics.median(rates['fancy']):,.0f} samples/s",
                "",
            )
        )
        for workers in (0, 2):
            rows.append(
                (
                    f"epochal.Loader, num_workers={workers}",
                    _ratio_text(rates[workers], rates["fancy"], "baseline"),
                    ">= 0.8" if workers == 0 else "",
                )
            )
        rows.append(
            (
                "  (stricter: vs numpy.take(images, idx, axis=0))",
                _ratio_text(rates[0], rates["take"], "np.take gather", rate=False),
                "",
            )
        )
        step(f"naive per-sample torch DataLoader, {cfg.naive_samples:,} samples x 2")
        naive_ds = _PerSampleDataset(images, labels)
        for workers in (0, 2):
            sampler = torch.utils.data.RandomSampler(naive_ds, num_samples=cfg.naive_samples)
            naive = torch.utils.data.DataLoader(
                naive_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers
            )
            rate = _median_rate(lambda naive=naive: sum(len(y) for _, y in naive), cfg.repeats)
            mine = statistics.median(rates[workers])
            rows.append(
                (
                    f"naive torch DataLoader, num_workers={workers}",
                    f"{rate[0]:,.0f} samples/s; epochal is {mine / rate[0]:.1f}x faster",
                    ">= 8x",
                )
            )
        step(f"CPU-bound transform, {cfg.transform_batches} batches at 0 and 2 workers")
        subset = epochal.from_arrays(
            image=images[: cfg.transform_batches * cfg.batch_size],
            label=labels[: cfg.transform_batches * cfg.batch_size],
        )
        transform_loaders = {
            w: epochal.Loader(subset, cfg.batch_size, num_workers=w, transform=_cpu_transform)
            for w in (0, 2)
        }
        for loader in transform_loaders.values():
            _loader_epoch(loader)()  # start the workers and warm up before timing
        transform_rates = _interleaved(
            {w: _loader_epoch(loader) for w, loader in transform_loaders.items()}, cfg.repeats
        )
        del transform_loaders
        step("the machine's own 2-process scaling on the same work")
        ceiling = _two_process_ceiling(subset.columns["image"], cfg.repeats)
        median0 = statistics.median(transform_rates[0])
        rows.append(
            (
                "CPU-bound transform, num_workers=2 vs 0",
                _ratio_text(transform_rates[2], transform_rates[0], "", rate=False)
                + f"; {median0:,.0f} -> {statistics.median(transform_rates[2]):,.0f} "
                f"samples/s, {1e6 / median0:.0f} us/record at 0 workers",
                ">= 1.7x",
            )
        )
        rows.append(
            (
                "  (the machine: same work, 2 bare processes vs 1)",
                f"{statistics.median(ceiling):.2f}x (per-round {min(ceiling):.2f}..{max(ceiling):.2f}); "
                "the loader's ratio is bounded by this, up to noise",
                "",
            )
        )
        rows.append(
            (
                "no transform, num_workers=2 vs 0",
                _ratio_text(rates[2], rates[0], "", rate=False)
                + " (memory gathers stay in-process: no IPC to pay)",
                "",
            )
        )

    step("resume latency at n = 10^9")
    n = 10**9
    latencies = {}
    for position in (0, n // 2, n - 1):
        loader = epochal.Loader(_TrivialSource(n), cfg.batch_size, seed=0)
        state = {**loader.state_dict(), "position": position}
        times = []
        for _ in range(max(5, cfg.repeats)):
            start = time.perf_counter()
            loader.load_state_dict(state)
            next(iter(loader))
            times.append(time.perf_counter() - start)
        latencies[position] = statistics.median(times) * 1e3
    rows.append(
        (
            "resume latency, n=10^9 (load_state_dict -> first batch)",
            ", ".join(f"pos {p:,}: {ms:.2f} ms" for p, ms in latencies.items()),
            "< 20 ms, flat",
        )
    )

    step("order cost over 10^7 positions")
    big = ShuffledOrder(n, seed=0, epoch=0)
    positions = np.arange(10**7, dtype=np.int64)
    times = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        big.index(positions)
        times.append(time.perf_counter() - start)
    rows.append(
        (
            "order cost, 10^7 positions vectorised",
            f"{statistics.median(times) / 1e7 * 1e9:.1f} ns/index",
            "<= 50 ns",
        )
    )
    step("order memory at n = 10^9")
    tracemalloc.start()
    order = ShuffledOrder(n, seed=1, epoch=1)
    order.index(np.arange(n - cfg.batch_size, n, dtype=np.int64))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows.append(
        (
            "order memory, n=10^9 (build + one batch)",
            f"{peak / 1024:.1f} KiB peak (numpy.random.permutation: {n * 8 / 2**30:.1f} GiB)",
            "< 1 MiB",
        )
    )
    return rows


def main(argv: list[str]) -> int:
    """Parse ``argv`` and print the table."""
    from epochal.cli import parse_args

    cfg = parse_args(
        BenchConfig,
        argv,
        prog="bench_core.py",
        description=(
            "Measure the loader on this machine: shuffled-epoch throughput against a bare numpy "
            "memmap gather and a naive per-sample DataLoader, worker scaling on a CPU-bound "
            "transform, resume latency and the order's cost. Every figure is a ratio to a "
            "baseline measured in the same run, so it holds on a busy machine too."
        ),
    )
    print("\n".join(overhead()), flush=True)
    if cfg.overhead_only:
        return 0
    rows = run(cfg)
    _print_table(
        f"epochal core benchmark: {cfg.records:,} records x 3,072 B, batch {cfg.batch_size}, "
        f"median of {cfg.repeats}",
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
