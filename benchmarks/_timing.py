"""Helpers shared by the scripts in ``benchmarks/``: interleaved rounds, ratios, tables, data.

Every figure a benchmark prints is a ratio to a baseline measured in the same run: each
contender runs once per round, rounds repeat, and a ratio is the median of the per-round
ratios, so the drift of a shared machine hits every contender alike and mostly cancels.
The scripts run as ``python benchmarks/<name>.py``, which puts this directory on
``sys.path``; they import this module as ``_timing``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "_interleaved",
    "_loader_epoch",
    "_median_rate",
    "_print_table",
    "_ratio_text",
    "benchmark_data",
]


def _median_rate(fn: Callable[[], int], repeats: int) -> tuple[float, float, float]:
    """Median, min and max samples/s of ``fn`` (which returns the samples it processed)."""
    rates = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        samples = fn()
        rates.append(samples / (time.perf_counter() - start))
    return statistics.median(rates), min(rates), max(rates)


def _interleaved(runs: dict[Any, Callable[[], int]], repeats: int) -> dict[Any, list[float]]:
    """Samples/s of each run, one run of each per round, ``repeats`` rounds."""
    rates: dict[Any, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            gc.collect()
            start = time.perf_counter()
            samples = fn()
            rates[name].append(samples / (time.perf_counter() - start))
    return rates


def _loader_epoch(loader: Any) -> Callable[[], int]:
    """A run of epoch 0 of ``loader`` from its start; returns the samples delivered."""

    def go() -> int:
        loader.set_epoch(0)
        return sum(len(b["label"]) for b in loader)

    return go


def _print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """The benchmarks' output: a title, then one aligned row per measurement."""
    width = max(len(r[0]) for r in rows)
    print(title)
    for name, result, target in rows:
        print(f"  {name:<{width}}  {result}" + (f"   [target {target}]" if target else ""))


def _ratio_text(values: list[float], base: list[float], name: str, *, rate: bool = True) -> str:
    """``values / base`` as the median of per-round ratios, with their range."""
    ratios = [v / b for v, b in zip(values, base)]
    text = f"{statistics.median(values):,.0f} samples/s = " if rate else ""
    text += f"{statistics.median(ratios):.2f}x" + (f" {name}" if name else "")
    return text + f" (per-round {min(ratios):.2f}..{max(ratios):.2f})"


def benchmark_data(directory: Path, records: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmarks' dataset: ``records`` x 3,072 random bytes as a read-only memmap in
    ``directory`` (page cache warmed by one full read), and int64 labels ``0..records-1``."""
    path = directory / "images.u8"
    images = np.memmap(path, dtype=np.uint8, mode="w+", shape=(records, 3072))
    rng = np.random.default_rng(0)
    for lo in range(0, records, 10_000):
        hi = min(records, lo + 10_000)
        images[lo:hi] = rng.integers(0, 256, (hi - lo, 3072), dtype=np.uint8)
    images.flush()
    del images
    images = np.memmap(path, dtype=np.uint8, mode="r", shape=(records, 3072))
    images.sum(dtype=np.uint64)  # read every page once: the page cache is warm
    return images, np.arange(records, dtype=np.int64)
