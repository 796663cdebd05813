"""Core benchmark (issue #2): Loader vs raw memmap gather, vs naive PyTorch, workers, resume, order.

Usage: python benchmarks/bench_core.py [--records 200000] [--repeats 3] ...
(the same as `epochal bench`; every figure is a ratio measured in the same run).

It first prints the Loader's own cost per batch (issue #18): a columnar source of 2M
int64 records with no transform, one shuffled epoch through the Loader against a bare
``column.take(idx, axis=0)`` + ``torch.from_numpy`` of the same batches (indices computed beforehand), at
batch sizes 256 and 1,024, interleaved, and fits ``a + b * batch_size`` to the
difference; then the order's cost per index. ``--overhead-only`` stops there (~1 min).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from epochal._bench import main

OVERHEAD_RECORDS = 2_000_000  # int64 records: 16 MB, a gather that costs little per index
OVERHEAD_BATCHES = (256, 1024)
OVERHEAD_ROUNDS = 7
ORDER_BLOCK = 65_536  # positions per order call, as the Loader computes them


def _loader_epoch(loader: object) -> Callable[[], int]:
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


def _order_pass(order: object, n: int) -> Callable[[], int]:
    def go() -> int:
        for lo in range(0, n, ORDER_BLOCK):
            order.index(np.arange(lo, min(n, lo + ORDER_BLOCK), dtype=np.int64))  # type: ignore[attr-defined]
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
        runs[f"loader{b}"] = _loader_epoch(epochal.Loader(source, b, seed=0))
        runs[f"bare{b}"] = _bare_epoch(column, [indices[a : a + b] for a in range(0, n, b)])
    runs["order"] = _order_pass(order, n)
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
    lines = [
        f"Loader's own cost: {n:,} int64 records, from_arrays, no transform, shuffled, "
        f"{rounds} interleaved rounds, median",
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
    fits = []
    for k in range(rounds):
        per_sample = (own_us(large, k) - own_us(small, k)) / (large - small) * 1e3  # ns
        per_batch = own_us(small, k) - small * per_sample / 1e3  # us
        fits.append((per_batch, per_sample, per_sample - order_ns[k]))

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
        f"                   b without the order = {med([f[2] for f in fits])} ns per sample",
        f"  order, n={n:,}, blocks of {ORDER_BLOCK:,} positions: {med(order_ns)} ns per index"
        f"   [target <= 10]",
        f"    = {statistics.median(o / m for o, m in zip(times['order'], times['multiply'])):.1f}"
        f" numpy uint64 multiplies per index, measured in the same rounds",
    ]
    return lines


if __name__ == "__main__":
    argv = sys.argv[1:]
    only = "--overhead-only" in argv
    argv = [a for a in argv if a != "--overhead-only"]
    print("\n".join(overhead()), flush=True)
    if not only:
        raise SystemExit(main(argv))
