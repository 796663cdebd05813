"""Parallel store builds: ``epochal build --workers 1`` vs ``--workers 2``, and the Ray and
Dask paths vs the single-process writer, on CPU-bound ingest made here.

Workloads:
- JSONL with parsing: lines of an id, a text and a list of 64 floats (``epochal build``).
- Image folder: ``epochal build`` of JPEG files (reads and stores them as they are).
- JPEG re-encoding (decode, resize to 3/4, encode at quality 90) of generated images:
  one process (a loop, then ``epochal.write``) vs Ray Data (``map_batches`` +
  ``epochal.ray.Sink``) vs Dask (``bag.map`` + ``epochal.dask.write_collection``), each
  engine with 2 worker processes; engine start-up is timed apart and stated.

Every number is the median of ``--repeat`` runs, and ratios compare runs of the same
invocation. Usage: ``python benchmarks/bench_engines.py [--records 60000] [--images 1500]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

import epochal


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _jsonl(path: str, n: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(n):
            vec = np.round(rng.standard_normal(64), 5).tolist()
            f.write(json.dumps({"id": i, "text": f"line {i} " * 4, "vec": vec}) + "\n")


def _jpeg(i: int, size: int = 96) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(i)
    base = np.linspace(0, 255, size, dtype=np.float32)
    pixels = base[:, None, None] + base[None, :, None] * 0.5 + rng.normal(0, 20, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def _image_folder(root: str, n: int) -> list[bytes]:
    images = [_jpeg(i) for i in range(n)]
    for i, data in enumerate(images):
        folder = os.path.join(root, f"class{i % 4}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
            f.write(data)
    return images


def reencode(data: bytes) -> bytes:
    """The CPU-bound step: decode, resize to 3/4, encode at quality 90."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _reencode_batch(batch: dict) -> dict:
    return {"id": batch["id"], "jpeg": np.array([reencode(b) for b in batch["jpeg"]], dtype=object)}


_CPU: dict[int, list[tuple[float, float]]] = {}  # workers -> (parent, pool) CPU s per run


def _build(src: str, dest: str, workers: int) -> None:
    """``epochal build`` in this process, so its CPU time and its pool's can be told apart."""
    from epochal.store._cmd_build import main as build

    shutil.rmtree(dest, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert build([src, dest, "--workers", str(workers)]) == 0
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = [a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before)]
    _CPU.setdefault(workers, []).append((cpu[0], cpu[1]))


def _cpu_line(n: int) -> str:
    """Where --workers 2 spends CPU, and the speed-up that allows on 2 idle cores."""
    one = statistics.median(p + c for p, c in _CPU[1][-n:])
    parent = statistics.median(p for p, _ in _CPU[2][-n:])
    pool = statistics.median(c for _, c in _CPU[2][-n:])
    bound = one / max(parent, (parent + pool) / 2)
    return (
        f"  CPU: --workers 1 {one:.2f} s; --workers 2 parent {parent:.2f} s + pool {pool:.2f} s "
        f"-> at most {bound:.2f}x on 2 idle cores (the parent's share is the serial part)"
    )


def _row(name: str, n: int, seconds: float, base: float | None) -> str:
    ratio = "" if base is None else f"{base / seconds:6.2f}x"
    return f"  {name:<44} {seconds:8.2f} s {n / seconds:12,.0f} rec/s  {ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000, help="JSONL lines")
    parser.add_argument("--images", type=int, default=1_500, help="JPEG images")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-engines", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-engines-")
    print(
        f"cores: {os.cpu_count()} (medians of {args.repeat}; ratio = speed-up over the first row)"
    )
    try:
        src = os.path.join(tmp, "data.jsonl")
        _jsonl(src, args.records)
        print(f"\nepochal build, JSONL with parsing ({args.records:,} lines, 64 floats each):")
        one = _median_time(lambda: _build(src, os.path.join(tmp, "j1"), 1), args.repeat)
        two = _median_time(lambda: _build(src, os.path.join(tmp, "j2"), 2), args.repeat)
        same = (
            epochal.open(os.path.join(tmp, "j1")).fingerprint
            == epochal.open(os.path.join(tmp, "j2")).fingerprint
        )
        print(_row("--workers 1", args.records, one, None))
        print(_row("--workers 2", args.records, two, one))
        print(f"  same fingerprint: {same}")
        print(_cpu_line(args.repeat))

        folder = os.path.join(tmp, "images")
        images = _image_folder(folder, args.images)
        print(f"\nepochal build, image folder ({args.images:,} JPEGs stored as they are):")
        one = _median_time(lambda: _build(folder, os.path.join(tmp, "i1"), 1), args.repeat)
        two = _median_time(lambda: _build(folder, os.path.join(tmp, "i2"), 2), args.repeat)
        print(_row("--workers 1", args.images, one, None))
        print(_row("--workers 2", args.images, two, one))
        print(_cpu_line(args.repeat))
        if not args.skip_engines:
            _engines(tmp, images, args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _engines(tmp: str, images: list[bytes], repeat: int) -> None:
    n = len(images)
    print(f"\nJPEG re-encoding ({n:,} images, 96x96 -> 72x72) into a store:")

    def single() -> None:
        dest = os.path.join(tmp, "single")
        shutil.rmtree(dest, ignore_errors=True)
        epochal.write(({"id": i, "jpeg": reencode(b)} for i, b in enumerate(images)), dest)

    base = _median_time(single, repeat)
    print(_row("one process (loop + epochal.write)", n, base, None))
    try:
        import ray

        import epochal.ray as epochal_ray
    except ImportError:
        print("  ray: not installed (pip install 'epochal[ray]')")
    else:
        start = time.perf_counter()
        ray.init(
            num_cpus=2, object_store_memory=512 << 20, include_dashboard=False, log_to_driver=False
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        started = time.perf_counter() - start
        source = ray.data.from_items(
            [{"id": i, "jpeg": b} for i, b in enumerate(images)], override_num_blocks=8
        )
        source = source.materialize()  # the input is in the object store before timing

        def run_ray() -> None:
            dest = os.path.join(tmp, "ray")
            shutil.rmtree(dest, ignore_errors=True)
            ds = source.map_batches(_reencode_batch, batch_format="numpy")
            epochal_ray.write_dataset(ds, dest)

        seconds = _median_time(run_ray, repeat)
        ray.shutdown()
        print(_row("Ray Data, 2 CPUs (map_batches + Sink)", n, seconds, base))
        print(f"  (ray.init took {started:.1f} s, not counted above)")
    try:
        import dask.bag as db
        import distributed

        import epochal.dask as epochal_dask
    except ImportError:
        print("  dask: not installed (pip install 'epochal[dask]')")
    else:
        start = time.perf_counter()
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
        started = time.perf_counter() - start
        bag = db.from_sequence(list(enumerate(images)), npartitions=8).persist()

        def run_dask() -> None:
            dest = os.path.join(tmp, "dask")
            shutil.rmtree(dest, ignore_errors=True)
            recs = bag.map(lambda item: {"id": item[0], "jpeg": reencode(item[1])})
            epochal_dask.write_collection(recs, dest, scheduler=client)

        seconds = _median_time(run_dask, repeat)
        client.close()
        cluster.close()
        print(_row("Dask, 2 worker processes (bag.map + write)", n, seconds, base))
        print(f"  (LocalCluster start took {started:.1f} s, not counted above)")


if __name__ == "__main__":
    main()
