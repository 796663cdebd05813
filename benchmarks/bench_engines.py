"""Parallel store builds on CPU-bound ingest: ``epochal build --workers 1`` vs ``--workers 2``,
and the Ray and Dask paths vs the single-process writer.

Workloads (made here, deterministic):
- JSONL with parsing: lines of an id, a text and a list of 64 floats (``epochal build``).
- Image folder with resizing: JPEG photos-like images (320x240) built with ``epochal build
  --resize 128`` (decode, bicubic resize, JPEG quality 90 in the workers).
- The same image work on the engines: one process (a loop over the files doing the same
  resize, then ``epochal.write``) vs Ray Data (``read`` paths -> ``map_batches`` ->
  ``epochal.ray.Sink``) vs Dask (``bag.map`` -> ``epochal.dask.write_collection``), each
  engine with 2 worker processes. The engines get paths, never image bytes, from the
  driver. Engine start-up and the fixed cost of one job are measured apart and stated.

Runs are interleaved: every round runs each variant once, a ratio compares the variants of
one round, and the table shows the median over rounds of those per-round ratios (so a
burst of load from another process moves one round, not one variant). Usage::

    python benchmarks/bench_engines.py [--records 40000] [--images 1200] [--engine-images 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import epochal
from epochal.store._ingest import _reencode, _Transform

RESIZE = 128  # shorter side after resizing (the images are 320x240)
TRANSFORM = _Transform(RESIZE, 90)  # what `epochal build --resize 128` does to each image


def _jsonl(path: str, n: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(n):
            vec = np.round(rng.standard_normal(64), 5).tolist()
            f.write(json.dumps({"id": i, "text": f"line {i} " * 4, "vec": vec}) + "\n")


def _image_folder(root: str, n: int) -> list[tuple[str, int]]:
    """``n`` 320x240 JPEGs in 4 class folders; returns (relative path, label) in build order."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    files = []
    for i in range(n):
        phase = rng.uniform(0, 6.28, 3)
        pixels = 127 + 100 * np.sin(x[..., None] / (9 + i % 7) + y[..., None] / 13 + phase)
        pixels += rng.normal(0, 12, pixels.shape)
        rel = f"class{i % 4}/{i:06d}.jpg"
        os.makedirs(os.path.join(root, f"class{i % 4}"), exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(root, rel), "JPEG", quality=95
        )
        files.append((rel, i % 4))
    return sorted(files, key=lambda f: (f[1], f[0]))


def _resized(root: str, rel: str) -> bytes:
    with open(os.path.join(root, rel), "rb") as f:
        return _reencode(f.read(), TRANSFORM, rel)


_CPU: dict[str, list[tuple[float, float]]] = {}  # variant -> (this process, children) CPU s


@contextlib.contextmanager
def _cpu(name: str):
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    yield
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = [a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before)]
    _CPU.setdefault(name, []).append((cpu[0], cpu[1]))


def _build(src: str, dest: str, workers: int, *extra: str) -> None:
    """``epochal build`` in this process, so its CPU time and its pool's can be told apart."""
    from epochal.store._cmd_build import main as build

    shutil.rmtree(dest, ignore_errors=True)
    argv = [src, dest, "--workers", str(workers), *extra]
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1], _cpu(f"{src} {workers}"):
        assert build(argv) == 0


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _tree_cpu() -> dict[str, float]:
    """CPU seconds so far of this process and of its live descendants, by role.

    ``tasks``: engine worker processes (Ray's ``ray::`` workers, Dask's spawned workers);
    ``services``: the engine's other processes (Ray's GCS, raylet, agents); ``driver``:
    this process (for Dask also the scheduler and nannies, which run in it).
    """
    import psutil

    def seconds(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    me = psutil.Process()
    cpu = {"driver": seconds(me), "tasks": 0.0, "services": 0.0}
    for child in me.children(recursive=True):
        try:
            name, command = child.name(), " ".join(child.cmdline())
            used = seconds(child)
        except psutil.Error:  # ended meanwhile
            continue
        task = name.startswith("ray::") or "default_worker.py" in command or "spawn_main" in command
        cpu["tasks" if task else "services"] += used
    return cpu


_SPLIT: dict[str, list[dict[str, float]]] = {}  # variant -> CPU seconds by role, per round


def _rounds(
    variants: dict[str, Callable[[], object]], rounds: int, split: bool = False
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            before = _tree_cpu() if split else {}
            times[name].append(_timed(fn))
            if split:
                after = _tree_cpu()
                _SPLIT.setdefault(name, []).append({k: after[k] - before[k] for k in after})
    return times


def _split_line(name: str, one: str) -> str:
    """Where a variant's CPU went, and what that allows on 2 idle cores against ``one``."""
    cpu = {k: statistics.median(r[k] for r in _SPLIT[name]) for k in _SPLIT[name][0]}
    line = (
        f"  CPU {name.split(',')[0].split(' (')[0]}: tasks {cpu['tasks']:.2f} s, engine services "
        f"{cpu['services']:.2f} s, driver {cpu['driver']:.2f} s"
    )
    if name == one:
        return line
    base = statistics.median(r["driver"] for r in _SPLIT[one])
    bound = min(2.0, base / max(cpu["driver"], sum(cpu.values()) / 2))
    return f"{line} -> at most {bound:.2f}x on 2 idle cores"


def _table(times: dict[str, list[float]], n: int) -> None:
    names = list(times)
    base = times[names[0]]
    for name in names:
        seconds = statistics.median(times[name])
        ratio = statistics.median(b / t for b, t in zip(base, times[name]))
        per_round = " ".join(f"{b / t:.2f}" for b, t in zip(base, times[name]))
        shown = "" if name == names[0] else f"{ratio:6.2f}x  (rounds: {per_round})"
        print(f"  {name:<42} {seconds:7.2f} s {n / seconds:10,.0f} rec/s  {shown}")


def _cpu_line(src: str) -> str:
    """Where --workers 2 spends CPU, and the speed-up that allows on 2 idle cores."""
    one = statistics.median(p + c for p, c in _CPU[f"{src} 1"])
    parent = statistics.median(p for p, _ in _CPU[f"{src} 2"])
    pool = statistics.median(c for _, c in _CPU[f"{src} 2"])
    bound = min(2.0, one / max(parent, (parent + pool) / 2))  # never beyond 2 cores
    return (
        f"  CPU: --workers 1 {one:.2f} s; --workers 2 parent {parent:.2f} s + pool {pool:.2f} s "
        f"(parent {parent / (parent + pool):.0%}) -> at most {bound:.2f}x on 2 idle cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40_000, help="JSONL lines")
    parser.add_argument("--images", type=int, default=1_200, help="320x240 JPEG images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine-images", type=int, default=3_000, help="images per engine job")
    parser.add_argument("--skip-engines", action="store_true")
    parser.add_argument("--skip-build", action="store_true", help="only the engine phases")
    parser.add_argument("--engines", default="ray,dask", help="comma-separated: ray, dask")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-engines-")
    t0 = time.perf_counter()
    print(
        f"cores: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f} "
        f"({args.rounds} interleaved rounds; x = median of per-round speed-ups over the first row)"
    )
    try:
        if not args.skip_build:
            _builds(tmp, args.records, args.images, args.rounds)
        if not args.skip_engines:
            n = args.engine_images
            folder = os.path.join(tmp, "engine-images")
            _engines(tmp, folder, _image_folder(folder, n), args.rounds, args.engines)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


def _builds(tmp: str, records: int, images: int, rounds: int) -> None:
    """``epochal build --workers 1`` vs ``--workers 2`` on JSONL and on an image folder."""
    src = os.path.join(tmp, "data.jsonl")
    _jsonl(src, records)
    print(f"\nepochal build, JSONL with parsing ({records:,} lines, 64 floats each):")
    times = _rounds(
        {
            "--workers 1": lambda: _build(src, os.path.join(tmp, "j1"), 1),
            "--workers 2": lambda: _build(src, os.path.join(tmp, "j2"), 2),
        },
        rounds,
    )
    _table(times, records)
    same = (
        epochal.open(os.path.join(tmp, "j1")).fingerprint
        == epochal.open(os.path.join(tmp, "j2")).fingerprint
    )
    print(f"  same fingerprint: {same}")
    print(_cpu_line(src))

    folder = os.path.join(tmp, "images")
    _image_folder(folder, images)
    print(
        f"\nepochal build --resize {RESIZE}, image folder ({images:,} 320x240 JPEGs, "
        f"decode + resize + JPEG q90):"
    )
    resize = ("--resize", str(RESIZE))
    variants: dict[str, Callable[[], object]] = {
        "--workers 1": lambda: _build(folder, os.path.join(tmp, "i1"), 1, *resize),
        "--workers 2": lambda: _build(folder, os.path.join(tmp, "i2"), 2, *resize),
    }
    times = _rounds(variants, rounds)
    _table(times, images)
    single = epochal.open(os.path.join(tmp, "i1"))
    print(
        f"  same fingerprint: {single.fingerprint == epochal.open(os.path.join(tmp, 'i2')).fingerprint}"
    )
    print(_cpu_line(folder))


def _single(tmp: str, folder: str, files: list[tuple[str, int]]) -> None:
    dest = os.path.join(tmp, "single")
    shutil.rmtree(dest, ignore_errors=True)
    records = (
        {"image": _resized(folder, rel), "label": label, "path": rel} for rel, label in files
    )
    epochal.write(records, dest)


def _resize_batch(batch: dict[str, Any], folder: str) -> dict[str, Any]:
    images = [_resized(folder, str(rel)) for rel in batch["path"]]
    return {
        "image": np.array(images, dtype=object),
        "label": batch["label"],
        "path": batch["path"],
    }


_ONE = "one process (loop + epochal.write)"
_TASKS = 8  # tasks per engine job: 4 per worker, so the last ones do not leave a core idle


def _engines(tmp: str, folder: str, files: list[tuple[str, int]], rounds: int, which: str) -> None:
    """Each engine in its own phase (started, measured against one process, shut down), so
    one engine's idle processes never slow the other's runs."""
    items = [{"path": rel, "label": label} for rel, label in files]
    print(f"\nthe same resize on the engines ({len(items):,} images, {_TASKS} tasks per job):")
    try:
        if "ray" not in which:
            raise ImportError
        import epochal.ray  # imports Ray
    except ImportError:
        print("  ray: not installed (pip install 'epochal[ray]')")
    else:
        _engine_phase(tmp, folder, files, items, rounds, "Ray Data, 2 CPUs (map_batches + Sink)")
    try:
        if "dask" not in which:
            raise ImportError
        import dask.bag  # noqa: F401
        import distributed  # noqa: F401

        import epochal.dask  # noqa: F401
    except ImportError:
        print("  dask: not installed (pip install 'epochal[dask]')")
    else:
        _engine_phase(
            tmp, folder, files, items, rounds, "Dask, 2 worker processes (bag.map + write)"
        )


def _start_ray() -> Callable[[list[dict[str, Any]], str, str], None]:
    import ray

    import epochal.ray

    ray.init(
        num_cpus=2,
        object_store_memory=256 << 20,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per job otherwise
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = False
    data_ctx.execution_options.preserve_order = True  # store order = file order
    # Ray Data's object-store budget policy admits one task of an operator until that task
    # has reported its output size, so the second CPU idled ~1 s of every job (measured: the
    # second worker's first task started 1.0-1.2 s after the first, at any task count or
    # object store size). The fused map -> write tasks return only a small dict each, so
    # there is nothing for that policy to hold back here.
    data_ctx.set_config("backpressure_policies.enabled", [])

    def run(items: list[dict[str, Any]], folder: str, dest: str) -> None:
        ds = ray.data.from_items(items, override_num_blocks=min(_TASKS, len(items)))
        ds = ds.map_batches(_resize_batch, fn_kwargs={"folder": folder}, batch_format="numpy")
        epochal.ray.write_dataset(ds, dest)

    return run


def _start_dask(stack: contextlib.ExitStack) -> Callable[[list[dict[str, Any]], str, str], None]:
    import dask.bag as db
    import distributed

    import epochal.dask

    cluster = stack.enter_context(
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    )
    client = stack.enter_context(distributed.Client(cluster))

    def run(items: list[dict[str, Any]], folder: str, dest: str) -> None:
        bag = db.from_sequence(items, npartitions=min(_TASKS, len(items)))
        records = bag.map(lambda r: {"image": _resized(folder, r["path"]), **r})
        epochal.dask.write_collection(records, dest, scheduler=client)

    return run


def _engine_phase(
    tmp: str,
    folder: str,
    files: list[tuple[str, int]],
    items: list[dict[str, Any]],
    rounds: int,
    name: str,
) -> None:
    with contextlib.ExitStack() as stack:
        start = time.perf_counter()
        if name.startswith("Ray"):
            import ray

            run = _start_ray()
            stack.callback(ray.shutdown)
        else:
            run = _start_dask(stack)
        started = time.perf_counter() - start

        def job(some: list[dict[str, Any]], dest: str) -> None:
            shutil.rmtree(os.path.join(tmp, dest), ignore_errors=True)
            run(some, folder, os.path.join(tmp, dest))

        first = _timed(lambda: job(items[:16], "tiny"))  # starts the workers, imports
        tiny = statistics.median(_timed(lambda: job(items[:16], "tiny")) for _ in range(3))
        before = _tree_cpu()
        time.sleep(2)
        after = _tree_cpu()
        idle = (after["tasks"] + after["services"] - before["tasks"] - before["services"]) / 2
        variants = {_ONE: lambda: _single(tmp, folder, files), name: lambda: job(items, "engine")}
        times = _rounds(variants, rounds, split=True)
        _table(times, len(items))
        for variant in variants:
            print(_split_line(variant, _ONE))
        _SPLIT.clear()
        engine = name.split(",")[0]
        print(
            f"  {engine} overhead, none of it in the table: start {started:.1f} s, first job "
            f"{first:.1f} s (workers start and import), then {tiny:.2f} s fixed per job (16 "
            f"images); idle, its processes use {idle:.2f} of a core"
        )
        n = len(files)
        reference = epochal.open(os.path.join(tmp, "single")).get_columns(np.arange(n))
        got = epochal.open(os.path.join(tmp, "engine")).get_columns(np.arange(n))
        same = all(list(got[k]) == list(reference[k]) for k in ("image", "label", "path"))
        print(f"  {engine}: the same records in the same order as one process: {same}")


if __name__ == "__main__":
    main()
