"""Windowed-order benchmark (issue #11): cost per index of the windowed order vs the plain one.

Usage: python benchmarks/bench_windows.py [--records 10000000] [--repeats 7]

Times ``order.index`` the way the Loader calls it: one rank's block of batches (~64K
positions, the loader's order block) at a time, for the plain shuffled order and for the
windowed order of a store 10x its cache, at several topologies. The two orders run
interleaved, round by round; each ratio is the median of the per-round ratios, so machine
noise mostly cancels. Also times each window's schedule ranges (once per window, per rank).

Then the batch mixing of the windowed order on a store written in label order (the remote
benchmark's set-up by default: 100,000 records of ~3 KB in 100 classes, batch 256, a cache
of 25% of the store, 64-record fetch units): the mean total-variation distance of each
batch's label histogram to the store's, in units of a global shuffle's, for the stratified
block order (what ``choose_layout`` makes) and the unstratified one of the same blocks,
at the chosen block size and at larger ones (fewer, larger requests).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tyro

from _timing import _print_table
from epochal._windows import ReadHint, WindowedOrder, choose_layout
from epochal.order import make_order
from epochal.plan import Plan


@dataclasses.dataclass(kw_only=True)
class Config:
    """Options of the windowed-order benchmark."""

    records: int = 10_000_000
    """Records in the epoch."""
    repeats: int = 7
    """Interleaved rounds per measurement."""
    cache_fraction: float = 0.1
    """The cache bound as a fraction of the store."""
    mix_records: int = 100_000
    """Records of the label-ordered store of the mixing table."""
    mix_classes: int = 100
    """Classes of the mixing table's store."""
    mix_cache_fraction: float = 0.25
    """The mixing table's cache bound as a fraction of its store."""
    mix_unit: int = 64
    """Fetch unit (granule) records of the mixing table's store."""


def _ns_per_index(fn: Callable[..., Any], size: int, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - start) / size * 1e9


def main(cfg: Config) -> None:
    rows = []
    for world, batch_size, record_bytes in [(1, 256, 1000), (8, 256, 1000), (2, 64, 100)]:
        store = cfg.records * record_bytes
        hint = ReadHint(
            record_bytes=record_bytes,
            cache_bytes=int(store * cfg.cache_fraction),
            min_block_records=1,
        )
        layout = choose_layout(
            hint, num_records=cfg.records, batch_size=batch_size, world_size=world
        )
        windowed = WindowedOrder(layout, seed=1, epoch=2)
        plain = make_order(cfg.records, seed=1, epoch=2)
        plan = Plan(
            num_records=cfg.records, batch_size=batch_size, world_size=world, rank=world - 1
        )
        per_block = 65_536 // batch_size
        positions = plan.full_positions(100, 100 + per_block).ravel()
        plain_ns, windowed_ns = [], []
        for _ in range(cfg.repeats):
            plain_ns.append(_ns_per_index(plain.index, positions.size, positions))
            windowed_ns.append(_ns_per_index(windowed.index, positions.size, positions))
        ratios = [w / p for w, p in zip(windowed_ns, plain_ns)]
        slice_records = layout.window_records // world
        ranges_ns = statistics.median(
            _ns_per_index(windowed.ranges, slice_records, 3, ranks=[0]) for _ in range(cfg.repeats)
        )
        name = (
            f"W={world} B={batch_size}: b={layout.block_records}, "
            f"S={layout.window_records}, K={layout.slice_blocks:.0f}"
        )
        rows.append(
            (
                name,
                f"plain {statistics.median(plain_ns):.1f} ns/index, windowed "
                f"{statistics.median(windowed_ns):.1f} ns/index = "
                f"{statistics.median(ratios):.2f}x (per-round {min(ratios):.2f}..{max(ratios):.2f});"
                f" ranges {ranges_ns:.1f} ns per record of a window slice",
                "",
            )
        )
    _print_table(
        f"windowed order vs plain shuffle, n={cfg.records:,}, cache {cfg.cache_fraction:.0%} "
        f"of the store, one rank's loader block of ~64K positions per call",
        rows,
    )


def _mean_tv(order: Any, labels: np.ndarray, classes: int, batch: int) -> float:
    full = len(labels) // batch * batch
    rows = labels[order.index(np.arange(full)).reshape(-1, batch)]
    hist = np.stack([np.bincount(row, minlength=classes) for row in rows]) / batch
    glob = np.bincount(labels, minlength=classes) / len(labels)
    return float((np.abs(hist - glob).sum(axis=1) / 2).mean())


def mixing(cfg: Config) -> None:
    """Batch mixing of the windowed order on a label-ordered store (module docstring)."""
    n, classes, batch = cfg.mix_records, cfg.mix_classes, 256
    labels = np.arange(n, dtype=np.int64) * classes // n
    hint = ReadHint(
        record_bytes=3_090, cache_bytes=int(n * 3_090 * cfg.mix_cache_fraction),
        min_block_records=cfg.mix_unit,
    )  # fmt: skip
    layout = choose_layout(hint, num_records=n, batch_size=batch, world_size=1)
    shuffle = _mean_tv(make_order(n, seed=1), labels, classes, batch)
    rows = []
    for scale in (1, 2, 4):
        b = layout.block_records * scale
        strata = max(1, int(layout.slice_blocks) // scale)
        stratified = dataclasses.replace(layout, block_records=b, strata=strata)
        plain = dataclasses.replace(stratified, strata=None)
        tv = [
            statistics.median(
                _mean_tv(WindowedOrder(x, seed=s, epoch=0), labels, classes, batch) / shuffle
                for s in range(3)
            )
            for x in (stratified, plain)
        ]
        chosen = " (chosen)" if scale == 1 else ""
        rows.append(
            (
                f"b={b}{chosen}, K={stratified.slice_blocks:.0f}",
                f"stratified {tv[0]:.2f}x, unstratified {tv[1]:.2f}x a global shuffle's "
                f"(model: {stratified.mixing_factor:.2f}x / {plain.mixing_factor:.2f}x)",
                "",
            )
        )
    _print_table(
        f"batch mixing on a label-ordered store: n={n:,}, {classes} classes, batch {batch}, "
        f"cache {cfg.mix_cache_fraction:.0%}, windows of {layout.window_records} records, "
        f"median of 3 seeds",
        rows,
    )


if __name__ == "__main__":
    config = tyro.cli(Config)
    main(config)
    mixing(config)
