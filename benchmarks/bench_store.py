"""Store benchmark: shuffled reads vs a numpy-memmap gather, write speed, size on disk.

Data as in the core benchmark: N records of a 3,072-byte uint8 image (32x32x3) and an
int64 label. Reads go through ``epochal.Loader(epochal.open(store), batch_size=256,
num_workers=0)`` (or ``get_columns`` with ``--direct``, or when the Loader is not
available) over one shuffled epoch; the baseline fancy-indexes ``numpy.memmap`` arrays
with the same shuffled batches in the same run. A variable-size variant (1-8 KiB byte
records) is read the same way; its baseline slices the records out of a memmapped blob
with an offsets array. Numbers are medians of ``--repeats`` runs; on a shared machine they
are noisy, the ratios less so.

    python benchmarks/bench_store.py                  # 200,000 records (about 0.6 GB)
    python benchmarks/bench_store.py --records 20000  # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

import epochal

BATCH = 256


def _medians(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of each function, runs interleaved so that load on a shared machine
    hits every contender alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _order(n: int) -> np.ndarray:
    try:
        order = epochal.make_order(n, seed=0, epoch=0, shuffle=True)
    except (AttributeError, ImportError):  # core not merged yet: any full shuffle does
        return np.random.default_rng(0).permutation(n)
    return np.asarray(order.index(np.arange(n)), dtype=np.int64)


def _loader_pass(store: object, direct: bool, order: np.ndarray) -> Callable[[], int]:
    if not direct:

        def run() -> int:
            loader = epochal.Loader(store, batch_size=BATCH, shuffle=True, seed=0, num_workers=0)
            loader.set_epoch(0)
            return sum(len(batch["label"]) for batch in loader)

        return run

    def run_direct() -> int:
        return sum(
            len(store.get_columns(order[a : a + BATCH])["label"])
            for a in range(0, len(order), BATCH)
        )

    return run_direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--var-records", type=int, default=None, help="default: records // 4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--direct", action="store_true", help="time get_columns instead of the Loader"
    )
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    direct = args.direct or _no_loader()
    n, n_var = args.records, args.var_records or args.records // 4
    scratch = tempfile.mkdtemp(prefix="bench_store_", dir=args.dir)
    rows: list[tuple[str, str]] = []
    try:
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
        rows.append(
            (
                "write throughput",
                f"{raw / write_s / 1e6:,.0f} MB/s ({n:,} records in {write_s:.1f} s)",
            )
        )
        rows.append(
            (
                "on-disk size vs raw",
                f"{on_disk / 1e6:,.1f} MB vs {raw / 1e6:,.1f} MB = {on_disk / raw:.3f}x",
            )
        )

        order = _order(n)
        mm_images = np.load(f"{scratch}/images.npy", mmap_mode="r")
        mm_labels = np.load(f"{scratch}/labels.npy", mmap_mode="r")

        def baseline() -> int:
            count = 0
            for a in range(0, n, BATCH):
                idx = order[a : a + BATCH]
                image, label = mm_images[idx], mm_labels[idx]
                count += len(label) + 0 * image.shape[0]
            return count

        store = epochal.open(f"{scratch}/store")
        read = _loader_pass(store, direct, order)
        assert read() == n and baseline() == n  # warm the page cache and the maps; check counts
        how = "store.get_columns" if direct else "Loader(open(store))"
        contenders: list[Callable[[], object]] = [baseline, read]
        if not direct:  # for reference: the Loader's own cost, and the store without it
            arrays = epochal.from_arrays(image=mm_images, label=mm_labels)
            contenders += [_loader_pass(arrays, False, order), _loader_pass(store, True, order)]
        base_s, store_s, *extra = _medians(contenders, args.repeats)
        rows.append(("shuffled read, numpy memmap", f"{n / base_s:,.0f} samples/s"))
        rows.append((f"shuffled read, {how}", f"{n / store_s:,.0f} samples/s"))
        rows.append(("  ratio store / memmap (target >= 0.7)", f"{base_s / store_s:.2f}"))
        if extra:
            rows.append(("  (Loader(from_arrays(memmap)) / memmap)", f"{base_s / extra[0]:.2f}"))
            rows.append(("  (store.get_columns, no Loader / memmap)", f"{base_s / extra[1]:.2f}"))

        sizes = rng.integers(1024, 8193, size=n_var)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        blob = np.lib.format.open_memmap(f"{scratch}/blob.npy", "w+", np.uint8, (int(offsets[-1]),))
        blob[:] = rng.integers(0, 256, size=blob.shape, dtype=np.uint8)
        blob.flush()
        blob = np.load(f"{scratch}/blob.npy", mmap_mode="r")
        epochal.write(
            (
                {"data": blob[offsets[i] : offsets[i + 1]].tobytes(), "label": i}
                for i in range(n_var)
            ),
            f"{scratch}/var",
        )
        var_order = _order(n_var)
        var_labels = np.arange(n_var)  # the store's "label" column, read alongside the bytes
        var_view = memoryview(blob)

        def var_baseline() -> int:
            count = 0
            for a in range(0, n_var, BATCH):
                idx = var_order[a : a + BATCH]
                starts, ends = offsets[idx].tolist(), offsets[idx + 1].tolist()
                data = [bytes(var_view[s:e]) for s, e in zip(starts, ends, strict=True)]
                count += len(data) + 0 * len(var_labels[idx])
            return count

        var_store = epochal.open(f"{scratch}/var")
        var_read = _loader_pass(var_store, direct, var_order)
        assert var_read() == n_var and var_baseline() == n_var
        contenders = [var_baseline, var_read]
        if not direct:
            contenders.append(_loader_pass(var_store, True, var_order))
        vbase_s, vstore_s, *extra = _medians(contenders, args.repeats)
        mb = int(offsets[-1]) / 1e6
        rows.append(
            (
                f"variable 1-8 KiB, memmap+offsets ({n_var:,})",
                f"{n_var / vbase_s:,.0f} samples/s, {mb / vbase_s:,.0f} MB/s",
            )
        )
        rows.append(
            (
                f"variable 1-8 KiB, {how}",
                f"{n_var / vstore_s:,.0f} samples/s, {mb / vstore_s:,.0f} MB/s",
            )
        )
        rows.append(("  ratio store / memmap", f"{vbase_s / vstore_s:.2f}"))
        if extra:
            rows.append(("  (store.get_columns, no Loader / memmap)", f"{vbase_s / extra[0]:.2f}"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(k) for k, _ in rows)
    print(
        f"epochal store benchmark: {n:,} x (3,072 B image + int64 label), batch {BATCH}, median of {args.repeats}"
    )
    print("-" * (width + 50))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _no_loader() -> bool:
    try:
        import epochal.loader  # noqa: F401
    except ImportError:
        return True
    return False


if __name__ == "__main__":
    main()
