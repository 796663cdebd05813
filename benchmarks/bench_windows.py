"""Windowed-order benchmark (issue #11): cost per index of the windowed order vs the plain one.

Usage: python benchmarks/bench_windows.py [--records 10000000] [--repeats 7]

Times ``order.index`` the way the Loader calls it: one rank's block of batches (~64K
positions, the loader's order block) at a time, for the plain shuffled order and for the
windowed order of a store 10x its cache, at several topologies. The two orders run
interleaved, round by round; each ratio is the median of the per-round ratios, so machine
noise mostly cancels. Also times each window's schedule ranges (once per window, per rank).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

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


if __name__ == "__main__":
    main(tyro.cli(Config))
