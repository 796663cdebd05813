"""Store benchmark: shuffled reads vs a numpy-memmap gather of the same bytes, write speed, size.

Data as in the core benchmark: N records of a 3,072-byte uint8 image (32x32x3) and an
int64 label, for each N of ``--records`` (default 50,000 and 200,000: the gather gets
slower as the data outgrows the CPU caches, so the Loader's fixed cost per batch shows
more at the smaller size). Every contender reads one shuffled epoch in batches of 256;
the baseline fancy-indexes ``numpy.memmap`` arrays (``images[idx]``, ``labels[idx]``)
with the same shuffled batches and wraps them as tensors (``torch.from_numpy``), as the
Loader hands them out; ``images.take(idx)`` is shown beside it for reference (numpy's
fastest bare gather). Contenders: ``Loader(open(store))`` at 0 and 2 workers (a local
store's batches are memory gathers, read in-process either way), ``store.get_columns``
alone, and ``Loader(from_arrays(memmap))``. Each round is one epoch of every contender,
taking turns every 8 batches in a shuffled order (the first two batches of a turn
untimed), and each ratio is the median of the per-round ratios, so the drift of a shared machine mostly cancels. A
variable-size variant (1-8 KiB byte records) is read the same way; its baseline slices
the records out of a memmapped blob with an offsets array.

    python benchmarks/bench_store.py                    # 50,000 and 200,000 records (~2 min)
    python benchmarks/bench_store.py --records 20000    # quick
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

import epochal

BATCH = 256
CPU = "@cpu"  # suffix of a contender's CPU-time entries in the timings
CHUNK = 8  # timed batches per turn of a stream in an interleaved round
SETTLE = 2  # untimed batches that start each turn (see _interleaved)


def _interleaved(
    streams: dict[str, Iterator[object]], batches: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds each stream takes for ``batches`` batches (one epoch), per round.

    Within a round the streams take turns every ``CHUNK`` timed batches (a few
    milliseconds), so the load of a shared machine, which drifts over seconds, hits every
    stream alike; whole-epoch turns let it favour whichever contender ran in a quiet
    second. The streams' order is shuffled for every set of turns: a contender runs up to
    10% slower for a whole turn after some neighbours (measured: whichever came after
    ``images.take``; the heap then hands it buffers at other addresses), so a fixed cycle
    would always charge that to the same one. Each turn first reads ``SETTLE`` batches
    untimed: the first batch or two after another contender's turn take up to 3x as long
    (its buffers still fill the caches), a cost of taking turns, not of either. ``name``
    holds wall-clock seconds, ``name + CPU`` this process's CPU seconds: on a shared
    machine the load disturbs the second far less (a local store is read in this process
    at any ``num_workers``, so its CPU time is all here)."""
    times: dict[str, list[float]] = {key: [] for name in streams for key in (name, name + CPU)}
    names = list(streams)
    shuffle = random.Random(0).shuffle
    clock, cpu_clock = time.perf_counter, time.process_time
    for _ in range(rounds):
        gc.collect()
        wall = dict.fromkeys(names, 0.0)
        cpu = dict.fromkeys(names, 0.0)
        for first in range(0, batches, CHUNK):
            steps = range(min(CHUNK, batches - first))
            shuffle(names)
            for name in names:
                stream = streams[name]
                for _ in range(SETTLE):
                    batch = next(stream)
                start, start_cpu = clock(), cpu_clock()
                for _ in steps:
                    batch = next(stream)
                del batch  # freed inside the turn, as a training loop frees it
                cpu[name] += cpu_clock() - start_cpu
                wall[name] += clock() - start
        for name in names:
            times[name].append(wall[name])
            times[name + CPU].append(cpu[name])
    return times


def _ratio(times: dict[str, list[float]], name: str, base: str) -> str:
    """Speed of ``name`` over ``base`` as the median of per-round ratios, with their range."""
    ratios = [b / t for b, t in zip(times[base], times[name], strict=True)]
    return f"{statistics.median(ratios):.2f}x (per-round {min(ratios):.2f}..{max(ratios):.2f})"


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _order(n: int) -> np.ndarray:
    return np.asarray(epochal.make_order(n, seed=0, epoch=0).index(np.arange(n)), dtype=np.int64)


def _loader_stream(source: object, workers: int) -> Iterator[Any]:
    """Epoch 0 of a Loader, over and over (its per-epoch start is part of its cost)."""
    loader = epochal.Loader(source, batch_size=BATCH, shuffle=True, seed=0, num_workers=workers)
    while True:
        loader.set_epoch(0)
        yield from loader


def _columns_stream(store: Any, order: np.ndarray) -> Iterator[Any]:
    batches = [order[a : a + BATCH] for a in range(0, len(order), BATCH)]
    while True:
        yield from map(store.get_columns, batches)


def _warm(streams: dict[str, Iterator[Any]], batches: int, n: int) -> None:
    """One epoch of each stream: the page cache and the maps are warm; check the counts."""
    for name, stream in streams.items():
        count = sum(len(next(stream)["label"]) for _ in range(batches))
        assert count == n, (name, count, n)


def _fixed(n: int, scratch: str, rounds: int, rows: list[tuple[str, str]]) -> None:
    """Rows for ``n`` fixed-size records: write speed, size, shuffled reads vs memmap."""
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(f"{scratch}/images.npy", "w+", np.uint8, (n, 32, 32, 3))
    for a in range(0, n, 10_000):
        images[a : a + 10_000] = rng.integers(
            0, 256, size=images[a : a + 10_000].shape, dtype=np.uint8
        )
    labels = np.lib.format.open_memmap(f"{scratch}/labels.npy", "w+", np.int64, (n,))
    labels[:] = rng.integers(0, 10, size=n)
    images.flush(), labels.flush()
    raw = images.nbytes + labels.nbytes

    start = time.perf_counter()
    epochal.write(
        ({"image": images[i], "label": int(labels[i])} for i in range(n)), f"{scratch}/store"
    )
    write_s = time.perf_counter() - start
    on_disk = _dir_bytes(f"{scratch}/store")
    del images, labels
    rows.append(
        (
            f"[{n:,}] write throughput",
            f"{raw / write_s / 1e6:,.0f} MB/s ({n:,} records in {write_s:.1f} s)",
        )
    )
    rows.append(
        (
            f"[{n:,}] on-disk size vs raw",
            f"{on_disk / 1e6:,.1f} MB vs {raw / 1e6:,.1f} MB = {on_disk / raw:.3f}x",
        )
    )

    order = _order(n)
    mm_images = np.load(f"{scratch}/images.npy", mmap_mode="r")
    mm_labels = np.load(f"{scratch}/labels.npy", mmap_mode="r")

    batches = -(-n // BATCH)
    index_batches = [order[a : a + BATCH] for a in range(0, n, BATCH)]

    def memmap_gather(take: bool) -> Iterator[dict[str, torch.Tensor]]:
        """The baseline: the same shuffled batches gathered from numpy memmaps of the same
        bytes, as tensors (what the Loader hands out); ``take``: ``numpy.take`` instead of
        the fancy-index, the fastest bare numpy gather, shown for reference."""
        while True:
            for idx in index_batches:
                if take:
                    image, label = mm_images.take(idx, axis=0), mm_labels.take(idx, axis=0)
                else:
                    image, label = mm_images[idx], mm_labels[idx]
                yield {"image": torch.from_numpy(image), "label": torch.from_numpy(label)}

    store = epochal.open(f"{scratch}/store")
    streams: dict[str, Iterator[Any]] = {
        "memmap": memmap_gather(take=False),
        "take": memmap_gather(take=True),
        "loader0": _loader_stream(store, 0),
        "loader2": _loader_stream(store, 2),
        "columns": _columns_stream(store, order),
        "arrays": _loader_stream(epochal.from_arrays(image=mm_images, label=mm_labels), 0),
    }
    _warm(streams, batches, n)
    times = _interleaved(streams, batches, rounds)
    base = statistics.median(times["memmap"])
    rows.append(
        (
            f"[{n:,}] shuffled read, numpy memmap images[idx]",
            f"{n / base:,.0f} samples/s ({base / batches * 1e6:.1f} us per batch)",
        )
    )
    for name, what, target in (
        ("take", "numpy memmap images.take(idx), for reference", ""),
        ("loader0", "Loader(open(store)), num_workers=0", ">= 0.9"),
        ("loader2", "Loader(open(store)), num_workers=2", ">= 0.9"),
        ("columns", "store.get_columns, no Loader", ">= 0.95"),
        ("arrays", "Loader(from_arrays(memmap))", ""),
    ):
        extra = statistics.median(
            [(t - b) / batches * 1e6 for t, b in zip(times[name], times["memmap"], strict=True)]
        )
        rows.append(
            (
                f"[{n:,}]   {what} / memmap",
                f"{_ratio(times, name, 'memmap')}; {extra:+.1f} us per batch; "
                f"CPU time {_ratio(times, name + CPU, 'memmap' + CPU)}"
                + (f"   [target {target}]" if target else ""),
            )
        )


def _variable(n_var: int, scratch: str, rounds: int, rows: list[tuple[str, str]]) -> None:
    """Rows for ``n_var`` byte records of 1-8 KiB: shuffled reads vs memmap + offsets."""
    rng = np.random.default_rng(1)
    sizes = rng.integers(1024, 8193, size=n_var)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    blob = np.lib.format.open_memmap(f"{scratch}/blob.npy", "w+", np.uint8, (int(offsets[-1]),))
    blob[:] = rng.integers(0, 256, size=blob.shape, dtype=np.uint8)
    blob.flush()
    blob = np.load(f"{scratch}/blob.npy", mmap_mode="r")
    epochal.write(
        ({"data": blob[offsets[i] : offsets[i + 1]].tobytes(), "label": i} for i in range(n_var)),
        f"{scratch}/var",
    )
    var_order = _order(n_var)
    var_labels = np.arange(n_var)  # the store's "label" column, read alongside the bytes
    var_view = memoryview(blob)

    var_batches = [var_order[a : a + BATCH] for a in range(0, n_var, BATCH)]

    def var_baseline() -> Iterator[dict[str, Any]]:
        while True:
            for idx in var_batches:
                starts, ends = offsets[idx].tolist(), offsets[idx + 1].tolist()
                data = [bytes(var_view[s:e]) for s, e in zip(starts, ends, strict=True)]
                yield {"data": data, "label": torch.from_numpy(var_labels[idx])}

    var_store = epochal.open(f"{scratch}/var")
    streams: dict[str, Iterator[Any]] = {
        "memmap": var_baseline(),
        "loader0": _loader_stream(var_store, 0),
        "columns": _columns_stream(var_store, var_order),
    }
    _warm(streams, len(var_batches), n_var)
    times = _interleaved(streams, len(var_batches), rounds)
    mb = int(offsets[-1]) / 1e6
    for name, what in (
        ("memmap", "memmap+offsets"),
        ("loader0", "Loader(open(store))"),
        ("columns", "store.get_columns"),
    ):
        seconds = statistics.median(times[name])
        rate = f"{n_var / seconds:,.0f} samples/s, {mb / seconds:,.0f} MB/s"
        if name != "memmap":
            rate += f" = {_ratio(times, name, 'memmap')}; CPU time "
            rate += _ratio(times, name + CPU, "memmap" + CPU)
        rows.append((f"[{n_var:,} variable 1-8 KiB] {what}", rate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", default="50000,200000", help="comma-separated dataset sizes to measure"
    )
    parser.add_argument("--var-records", type=int, default=None, help="default: largest // 4")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    sizes = [int(s) for s in str(args.records).split(",") if s]
    n_var = args.var_records or max(sizes) // 4
    rows: list[tuple[str, str]] = []
    started = time.perf_counter()
    for n in sizes:
        scratch = tempfile.mkdtemp(prefix="bench_store_", dir=args.dir)
        try:
            _fixed(n, scratch, args.repeats, rows)
            if n == max(sizes):
                _variable(n_var, scratch, args.repeats, rows)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(k) for k, _ in rows)
    print(
        f"epochal store benchmark: N x (3,072 B image + int64 label), batch {BATCH}, "
        f"{args.repeats} interleaved rounds, median of per-round ratios "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print("-" * (width + 60))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
