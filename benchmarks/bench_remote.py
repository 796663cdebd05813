"""Remote-store benchmark: a store on a local S3 server, read through a counting proxy.

The data is written in label order (records sorted by class, as ``epochal build`` of a
sorted class folder writes them): N records of a 3,072-byte uint8 image, an int64 label
(one of --classes) and an int64 index. It goes to moto's S3 server (a child process on
127.0.0.1) once per system: epochal's store, MosaicML Streaming's MDS and LitData's
chunks, all with shards of about store/40 (at most 8 MiB: moto reads a whole object for
every range GET, so large shards would measure moto). Every rank reads through its own
:class:`CountingProxy` (its own "network link"), which counts the bytes it delivers; the
"slow" network adds --latency-ms per request and caps each link at --bandwidth-mbs.

Each run is one fresh process per rank (W = 2 is two processes with separate caches, as
on two nodes) that reads one shuffled epoch with a simulated training step of --step-ms
per batch (a sleep: the accelerator's time, during which prefetch may run), then, with a
fresh cold cache, resumes at the middle of the epoch and takes one batch. Measured:

- bytes/store: GET bytes of all ranks' epochs together over the store's bytes.
- vs local: samples/s over the same reader on the local copy of the store (same W,
  workers and step), both measured in this run.
- first batch: seconds to the first batch, cold (open included) and after the resume.
- mixing: mean total-variation distance of each batch's label histogram from the global
  one, over the same for a true global shuffle of the same labels (1.00 = global shuffle).
- disk peak: the cache filesystem's peak use (statvfs of a tmpfs mounted per rank; else
  the cache folder's file sizes, blind to deleted-but-mapped files) over the cache bound.

An epoch that runs past --time-limit stops there; its row shows the bytes of the part
read ("3.1x in 40%": 3.1 stores' bytes for 40% of the epoch). Results go to stdout and docs/benchmarks/remote.md (+ remote.png when
matplotlib is installed).

    python benchmarks/bench_remote.py            # 100,000 records (~308 MB), ~10 minutes
    python benchmarks/bench_remote.py --quick    # 12,000 records, one network, ~3 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "store"))

from disk_env import PeakSampler, cannot_mount_reason, tmpfs, tree_bytes  # noqa: E402
from s3_env import CountingProxy, fetch_traffic, free_port, moto_server  # noqa: E402

IMAGE_BYTES = 3072
SYSTEMS = ("epochal", "streaming", "litdata")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
    """One measured configuration."""

    system: str
    net: str  # "local", "free" or "slow"
    cache: float  # fraction of the store
    workers: int
    world: int

    @property
    def label(self) -> str:
        return f"{self.system}/{self.net}/c{self.cache:.0%}/w{self.workers}/W{self.world}"


# --------------------------------------------------------------------------- the data


def make_data(root: Path, n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Label-ordered records as memmaps (images, labels), written once per size."""
    root.mkdir(parents=True, exist_ok=True)
    path_images, path_labels = root / f"images-{n}.npy", root / f"labels-{n}-{classes}.npy"
    if not path_images.exists():
        rng = np.random.default_rng(0)
        images = np.lib.format.open_memmap(
            root / "tmp-images.npy", "w+", np.uint8, (n, IMAGE_BYTES)
        )
        for a in range(0, n, 10_000):
            images[a : a + 10_000] = rng.integers(0, 256, images[a : a + 10_000].shape, np.uint8)
        images.flush()
        del images
        os.replace(root / "tmp-images.npy", path_images)
    if not path_labels.exists():
        np.save(path_labels, (np.arange(n, dtype=np.int64) * classes) // n)
    return np.load(path_images, mmap_mode="r"), np.load(path_labels)


def _records(images: np.ndarray, labels: np.ndarray) -> Iterator[dict[str, Any]]:
    for i in range(len(labels)):
        yield {"image": images[i], "label": int(labels[i]), "index": i}


def build(system: str, images: np.ndarray, labels: np.ndarray, out: Path, shard: int) -> None:
    """Write the data in ``system``'s format to the local folder ``out``."""
    if out.exists():
        shutil.rmtree(out)
    if system == "epochal":
        import epochal

        epochal.write(_records(images, labels), str(out), shard_size=shard)
    elif system == "streaming":
        streaming = _import_streaming()
        columns = {"image": "bytes", "label": "int", "index": "int"}
        with streaming.MDSWriter(out=str(out), columns=columns, size_limit=shard) as writer:
            for r in _records(images, labels):
                writer.write({"image": r["image"].tobytes(), "label": r["label"], "index": r["index"]})  # fmt: skip
    elif system == "litdata":
        import litdata

        n, root = len(labels), str(Path(images.filename).parent)  # the memmaps' folder
        step = max(1, n // 8)
        litdata.optimize(
            fn=_litdata_rows,
            inputs=[(root, n, lo, min(n, lo + step)) for lo in range(0, n, step)],
            output_dir=str(out),
            chunk_bytes=shard,
            num_workers=1,
            mode="overwrite",
        )
    else:
        raise ValueError(f"unknown system {system!r}")


def _litdata_rows(arg: tuple[str, int, int, int]) -> Iterator[dict[str, Any]]:
    root, n, lo, hi = arg
    images = np.load(Path(root) / f"images-{n}.npy", mmap_mode="r")
    labels = np.load(next(Path(root).glob(f"labels-{n}-*.npy")))
    for i in range(lo, hi):
        yield {"image": np.asarray(images[i]).tobytes(), "label": int(labels[i]), "index": i}


def _import_streaming() -> Any:
    """``import streaming`` with a stub for the torchvision it imports for its vision datasets
    (no torchvision on PyPI loads beside CPU torch 2.13; see benchmarks/peers/NOTES.md)."""
    import importlib.machinery
    import importlib.util
    import types

    if importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules:
        names = ("torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.transforms.functional")  # fmt: skip
        for name in names:
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
        sys.modules["torchvision.datasets"].VisionDataset = object  # type: ignore[attr-defined]
        sys.modules["torchvision.transforms.functional"].to_tensor = None  # type: ignore[attr-defined]
    import streaming

    return streaming


# --------------------------------------------------------------------------- one rank (child)


def _collate(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {
        "label": np.fromiter((r["label"] for r in records), np.int64, len(records)),
        "index": np.fromiter((r["index"] for r in records), np.int64, len(records)),
    }


def _open_loader(spec: dict[str, Any], cache: str) -> Any:
    """The system's loader for this rank, reading through the rank's proxy (or locally)."""
    system, rank, world, workers = spec["system"], spec["rank"], spec["world"], spec["workers"]
    batch, seed = spec["batch"], 0
    if system == "epochal":
        import epochal

        if spec["net"] == "local":
            store = epochal.open(spec["local"])
        else:
            store = epochal.open(
                spec["url"],
                storage_options=spec["options"],
                cache_dir=cache,
                cache_size=spec["cache_bytes"],
            )
        return epochal.Loader(
            store, batch_size=batch, shuffle=True, seed=seed, num_workers=workers,
            rank=rank, world_size=world, with_index=False,
        )  # fmt: skip
    if system == "streaming":
        streaming = _import_streaming()
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()
        kw: dict[str, Any] = {"local": spec["local"]}
        if spec["net"] != "local":
            kw = {"remote": spec["url"], "local": cache, "cache_limit": spec["cache_bytes"]}
        dataset = streaming.StreamingDataset(
            shuffle=True, shuffle_seed=seed, batch_size=batch, **kw
        )
        return streaming.StreamingDataLoader(
            dataset, batch_size=batch, num_workers=workers, collate_fn=_collate
        )
    if system == "litdata":
        import litdata
        from litdata.streaming.resolver import Dir

        if spec["net"] == "local":
            dataset = litdata.StreamingDataset(input_dir=spec["local"], shuffle=True, seed=seed)
        else:
            dataset = litdata.StreamingDataset(
                input_dir=Dir(path=cache, url=spec["url"]),
                shuffle=True,
                seed=seed,
                max_cache_size=spec["cache_bytes"],
                storage_options={"endpoint_url": spec["options"]["endpoint_url"]},
            )
        if world > 1:
            from litdata.utilities.env import _DistributedEnv

            dataset.distributed_env = _DistributedEnv(world, rank, 1)
        return litdata.StreamingDataLoader(
            dataset, batch_size=batch, num_workers=workers, collate_fn=_collate
        )
    raise ValueError(f"unknown system {system!r}")


def _arrays(batch: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(batch["label"]).reshape(-1), np.asarray(batch["index"]).reshape(-1)


def _traffic(spec: dict[str, Any]) -> tuple[int, int]:
    """(GET bytes, GET requests) this rank's proxy has delivered for the store so far."""
    if spec["net"] == "local":
        return 0, 0
    got = fetch_traffic(spec["options"]["endpoint_url"], spec["prefix"])
    return got.bytes, got.requests


def _epoch(spec: dict[str, Any], cache: str) -> dict[str, Any]:
    """One shuffled epoch with the training step; the state at the middle is kept."""
    step, limit = spec["step_ms"] / 1000, spec["time_limit"]
    disk_path = spec["disk"] or cache
    measure = tree_bytes if spec["disk_mode"] == "files" else None
    labels, indices, state, first = [], [], None, None
    os.makedirs(cache, exist_ok=True)
    sampler = PeakSampler(disk_path, interval=0.005, **({"measure": measure} if measure else {}))
    t0 = time.perf_counter()
    with sampler:
        loader = _open_loader(spec, cache)
        expected = len(loader)
        for i, batch in enumerate(loader):
            if first is None:
                first = time.perf_counter() - t0
            got_labels, got_indices = _arrays(batch)
            labels.append(got_labels)
            indices.append(got_indices)
            if i + 1 == expected // 2:
                state = loader.state_dict()
            time.sleep(step)
            if time.perf_counter() - t0 > limit:
                break
        elapsed = time.perf_counter() - t0
    all_indices = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    return {
        "seconds": elapsed,
        "first_batch": first,
        "batches": len(labels),
        "expected_batches": expected,
        "complete": len(labels) >= expected,
        "samples": int(all_indices.size),
        "labels": [b.tolist() for b in labels],
        "indices_file": _save_indices(spec, all_indices),
        "bytes": _traffic(spec)[0],
        "requests": _traffic(spec)[1],
        "disk_peak": sampler.peak_above_baseline,
        "disk_samples": sampler.samples,
        "state": _jsonable(state),
    }


def _jsonable(state: Any) -> Any:
    try:
        json.dumps(state)
    except TypeError:
        return None
    return state


def _save_indices(spec: dict[str, Any], indices: np.ndarray) -> str:
    path = f"{spec['out']}.indices.npy"
    np.save(path, indices)
    return path


def _resume(spec: dict[str, Any], cache: str, state: Any) -> dict[str, Any]:
    """A fresh process's view of a restart: cold cache, state of the middle, one batch."""
    if state is None:
        return {"error": "no resumable state"}
    before = _traffic(spec)
    t0 = time.perf_counter()
    loader = _open_loader(spec, cache)
    loader.load_state_dict(state)
    it = iter(loader)
    next(it)
    seconds = time.perf_counter() - t0
    with contextlib.suppress(Exception):
        del it
    return {"first_batch": seconds, "bytes": _traffic(spec)[0] - before[0]}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One rank's measurements of one run: the epoch, then the resume on a cold cache."""
    os.environ.update(spec["env"])  # the peers read their endpoint and rank from it
    result: dict[str, Any] = {"rank": spec["rank"]}
    cache = os.path.join(spec["cache_root"], "epoch")
    try:
        result["epoch"] = _epoch(spec, cache)
        shutil.rmtree(cache, ignore_errors=True)
        resume_cache = os.path.join(spec["cache_root"], "resume")
        try:
            result["resume"] = _resume(spec, resume_cache, result["epoch"].pop("state"))
        except Exception as err:
            result["resume"] = {"error": _one_line(err)}
    except Exception as err:
        result["error"] = _one_line(err)
        result["traceback"] = traceback.format_exc()[-3000:]
    return result


def _one_line(err: BaseException) -> str:
    lines = f"{type(err).__name__}: {err}".splitlines()
    return lines[0][:200] if lines else type(err).__name__


def _warm(system: str) -> None:
    """Imports and first-use set-up before any timing (they cost seconds on a loaded machine)."""
    import epochal

    tiny = epochal.from_arrays(x=np.zeros((8, 2)), label=np.zeros(8, np.int64))
    next(iter(epochal.Loader(tiny, batch_size=4)))
    if system == "streaming":
        _import_streaming()
    elif system == "litdata":
        import litdata  # noqa: F401


def serve(system: str) -> None:
    """A rank process: runs each JSON spec read from stdin, answers ``done <result file>``."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    _warm(system)
    print("ready", flush=True)
    for line in sys.stdin:
        spec = json.loads(line)
        result = measure(spec)
        Path(spec["out"]).write_text(json.dumps(result))
        print(f"done {spec['out']}", flush=True)
    sys.stdout.flush()
    os._exit(0)  # peers' worker pools and shared memory: do not wait for their teardown


class RankProcess:
    """A long-lived interpreter for one (system, rank): imports once, then runs specs.

    Starting a fresh interpreter per run would cost tens of seconds of imports on a shared
    machine; each run still gets its own loader, proxy, cache and filesystem.
    """

    def __init__(self, python: str, system: str, log: Path) -> None:
        self.python, self.system, self.log = python, system, log
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(HERE)])}
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(
                [self.python, __file__, "--serve", self.system],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
            )  # fmt: skip

    def _line(self, timeout: float) -> str | None:
        import select

        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else None

    def submit(self, spec: dict[str, Any], *, start_timeout: float = 300) -> None:
        self.start()
        assert self.proc is not None and self.proc.stdin is not None
        if not getattr(self, "_ready", False):
            if self._line(start_timeout) != "ready":
                self.kill()
                raise RuntimeError(f"the {self.system} rank process did not start: {self.tail()}")
            self._ready = True
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> dict[str, Any]:
        line = self._line(timeout)
        if line is None or not line.startswith("done "):
            self.kill()
            why = f"ran past {timeout:.0f} s" if line is None else f"died: {self.tail()}"
            return {"error": f"rank process {why}"}
        return json.loads(Path(line.removeprefix("done ")).read_text())

    def tail(self) -> str:
        lines = [ln for ln in self.log.read_text().splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._ready = False

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


# --------------------------------------------------------------------------- orchestration


@dataclasses.dataclass
class Setup:
    args: argparse.Namespace
    python: str
    work: Path
    n: int
    store_bytes: dict[str, int]
    urls: dict[str, str]
    locals: dict[str, str]
    server: Any
    labels: np.ndarray
    ranks: dict[tuple[str, int], RankProcess]


def _tv_mean(batches: list[list[int]], classes: int, global_hist: np.ndarray) -> float:
    tvs = []
    for b in batches:
        if not b:
            continue
        hist = np.bincount(np.asarray(b), minlength=classes) / len(b)
        tvs.append(0.5 * np.abs(hist - global_hist).sum())
    return float(np.mean(tvs)) if tvs else float("nan")


def _global_shuffle_tv(labels: np.ndarray, batch: int, classes: int) -> float:
    hist = np.bincount(labels, minlength=classes) / len(labels)
    perm = np.random.default_rng(12345).permutation(labels)
    full = len(perm) // batch * batch
    return _tv_mean(perm[:full].reshape(-1, batch).tolist(), classes, hist)


def run_one(setup: Setup, run: Run) -> dict[str, Any]:
    """Start the proxies, caches and rank processes of ``run``; gather and combine results."""
    args = setup.args
    store_bytes = setup.store_bytes[run.system]
    cache_bytes = max(1, int(run.cache * store_bytes))
    with contextlib.ExitStack() as stack:
        proxies = []
        if run.net != "local":
            for _ in range(run.world):
                slow = run.net == "slow"
                proxies.append(
                    stack.enter_context(
                        CountingProxy(
                            setup.server.endpoint_url,
                            latency=args.latency_ms / 1000 if slow else 0.0,
                            bandwidth=args.bandwidth_mbs * 1e6 if slow else None,
                            lifetime=args.time_limit * 4 + 300,
                        )
                    )
                )
        root = Path(tempfile.mkdtemp(prefix="rank-", dir=setup.work / "caches"))
        stack.callback(shutil.rmtree, root, True)
        disks, disk_mode = [], "none"
        for rank in range(run.world):
            rank_root = root / f"r{rank}"
            if run.net != "local" and not args.no_tmpfs and cannot_mount_reason() is None:
                # room for a whole store: today's cache may hold it all; the peak is the figure
                size = int(store_bytes * 1.3) + (64 << 20)
                disks.append(str(stack.enter_context(tmpfs(rank_root, size))))
                disk_mode = "statvfs"
            else:
                rank_root.mkdir(parents=True)
                disks.append("")
                disk_mode = "files" if run.net != "local" else "none"
        specs, master_port = [], str(free_port())  # streaming's W = 2 joins a gloo group
        for rank in range(run.world):
            endpoint = proxies[rank].endpoint_url if proxies else ""
            spec = {
                "system": run.system, "net": run.net, "rank": rank, "world": run.world,
                "workers": run.workers, "batch": args.batch, "step_ms": args.step_ms,
                "time_limit": args.time_limit, "cache_bytes": cache_bytes,
                "url": setup.urls[run.system], "local": setup.locals[run.system],
                "prefix": setup.urls[run.system].removeprefix("s3://"),
                "options": proxies[rank].options if proxies else {},
                "cache_root": str(root / f"r{rank}"), "disk": disks[rank], "disk_mode": disk_mode,
                "out": str(root / f"result-{rank}.json"),
                "env": {
                    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "S3_ENDPOINT_URL": endpoint,
                    "AWS_ENDPOINT_URL": endpoint, "RANK": str(rank), "WORLD_SIZE": str(run.world),
                    "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "NODE_RANK": str(rank),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": master_port,
                    "AWS_ALLOW_HTTP": "true",  # litdata's obstore path refuses http:// otherwise
                },
            }  # fmt: skip
            specs.append(spec)
        results: list[dict[str, Any]] = []
        timeout = args.time_limit * 3 + 120
        started = []
        for spec in specs:
            try:
                setup.ranks[(run.system, spec["rank"])].submit(spec)
                started.append(spec)
            except RuntimeError as err:
                results.append({"error": str(err)})
        for spec in started:
            res = setup.ranks[(run.system, spec["rank"])].wait(timeout)
            if "epoch" in res:
                res["epoch"]["indices"] = np.load(res["epoch"].pop("indices_file"))
            results.append(res)
        return _combine(setup, run, results, cache_bytes)


def _combine(
    setup: Setup, run: Run, results: list[dict[str, Any]], cache_bytes: int
) -> dict[str, Any]:
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    epochs = [r["epoch"] for r in results]
    classes = setup.args.classes
    hist = np.bincount(setup.labels, minlength=classes) / len(setup.labels)
    batches = [b for e in epochs for b in e["labels"]]
    complete = all(e["complete"] for e in epochs)
    samples = sum(e["samples"] for e in epochs)
    fraction = samples / setup.n
    indices = np.concatenate([e["indices"] for e in epochs])
    once = bool(complete and np.array_equal(np.sort(indices), np.arange(setup.n)))
    resumes = [r.get("resume", {}) for r in results]
    resume_errors = [x["error"] for x in resumes if "error" in x]
    store_bytes = setup.store_bytes[run.system]
    return {
        "complete": complete,
        "fraction": fraction,
        "every_record_once": once,
        # not scaled up when an epoch was cut short: many readers fetch most bytes early
        "bytes_ratio": sum(e["bytes"] for e in epochs) / store_bytes,
        "requests": sum(e.get("requests", 0) for e in epochs),
        "samples_per_s": statistics.median(e["samples"] / e["seconds"] for e in epochs),
        "first_batch": max(e["first_batch"] or float("nan") for e in epochs),
        "resume_first_batch": None if resume_errors else max(x["first_batch"] for x in resumes),
        "resume_bytes_ratio": None
        if resume_errors
        else sum(x["bytes"] for x in resumes) / store_bytes,
        "resume_error": resume_errors[0] if resume_errors else None,
        "tv": _tv_mean(batches, classes, hist),
        "disk_peak_ratio": None
        if run.net == "local"
        else max(e["disk_peak"] for e in epochs) / cache_bytes,
        "cache_bytes": cache_bytes,
    }


def _upload(fs: Any, local: Path, url: str) -> None:
    fs.put(str(local), url.removeprefix("s3://"), recursive=True)


def prepare(args: argparse.Namespace, server: Any, systems: list[str]) -> Setup:
    """Generate the data, build each system's copy locally and upload it to the server."""
    import s3fs

    work = Path(args.workdir)
    (work / "caches").mkdir(parents=True, exist_ok=True)
    images, labels = make_data(work / "data", args.records, args.classes)
    raw = images.nbytes + labels.nbytes
    shard = int(min(8 << 20, max(256 << 10, raw // 40)))
    fs = s3fs.S3FileSystem(**server.options, skip_instance_cache=True)
    ranks = {
        (system, rank): RankProcess(args.python, system, work / f"{system}-rank{rank}.log")
        for system in systems
        for rank in range(max(args.worlds))
    }
    for process in ranks.values():  # their imports overlap with the builds below
        process.start()
    urls, local_paths, sizes = {}, {}, {}
    ok = []
    for system in systems:
        t0 = time.perf_counter()
        out = work / f"{system}-{args.records}"
        try:
            if system != "epochal":  # the peers build in the bench python (their own venv)
                subprocess.run([args.python, __file__, "--build", system, str(out), str(shard),
                                str(work / "data"), str(args.records), str(args.classes)],
                               check=True, capture_output=True, text=True,
                               env=os.environ | {"PYTHONPATH": str(REPO / "src")})  # fmt: skip
            else:
                build(system, images, labels, out, shard)
        except subprocess.CalledProcessError as err:
            lines = [ln for ln in err.stderr.splitlines() if ln.strip()]
            print(f"  skip {system}: its build failed: {lines[-1] if lines else err}")
            continue
        urls[system] = server.url(f"{system}-{args.records}")
        _upload(fs, out, urls[system])
        local_paths[system] = str(out)
        sizes[system] = tree_bytes(out)
        ok.append(system)
        print(f"  {system:9} {sizes[system] / 1e6:7.1f} MB, built and uploaded in "
              f"{time.perf_counter() - t0:5.1f} s", flush=True)  # fmt: skip
    return Setup(args=args, python=args.python, work=work, n=args.records, store_bytes=sizes,
                 urls=urls, locals=local_paths, server=server, labels=np.asarray(labels),
                 ranks=ranks)  # fmt: skip


def plan_runs(args: argparse.Namespace, systems: list[str]) -> list[Run]:
    """Every combination with --full; else the peers (which may thrash) and the free network
    only at the largest cache, to keep the run short on a shared machine."""
    runs = []
    for system in systems:
        for workers in args.workers:
            for world in args.worlds:
                runs.append(
                    Run(system=system, net="local", cache=1.0, workers=workers, world=world)
                )
                for net in args.nets:
                    for cache in args.caches:
                        if _wanted(args, system, net, cache):
                            runs.append(Run(system=system, net=net, cache=cache,
                                            workers=workers, world=world))  # fmt: skip
    return runs


def _wanted(args: argparse.Namespace, system: str, net: str, cache: float) -> bool:
    if args.full or (system == "epochal" and net == "slow"):
        return True
    slowest = "slow" if "slow" in args.nets else args.nets[0]
    return cache == max(args.caches) and (system == "epochal" or net == slowest)


def _fmt(x: Any, spec: str, none: str = "-") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return none
    return format(x, spec)


def _note(errors: list[str], error: str | None) -> str:
    if not error:
        return "-"
    errors.append(error)
    return f"error {len(errors)}"


def table(
    results: list[tuple[Run, dict[str, Any]]], ref_tv: float, errors: list[str]
) -> list[list[str]]:
    """The report's rows; the text of each failed measurement goes to ``errors``."""
    local = {
        (r.system, r.workers, r.world): res["samples_per_s"]
        for r, res in results
        if r.net == "local" and "error" not in res
    }
    rows = [["system", "net", "cache", "workers", "W", "bytes/store", "GETs", "samples/s", "vs local",
             "1st batch s", "resume 1st s", "resume bytes/store", "mixing", "disk peak/bound",
             "once"]]  # fmt: skip
    for run, res in results:
        if run.net == "local":
            continue
        head = [run.system, run.net, f"{run.cache:.0%}", str(run.workers), str(run.world)]
        if "error" in res:
            rows.append([*head, f"error {len(errors) + 1}", *[""] * 9])
            errors.append(res["error"])
            continue
        part = "" if res["complete"] else f" in {res['fraction']:.0%}"
        base = local.get((run.system, run.workers, run.world))
        rows.append([
            *head,
            _fmt(res["bytes_ratio"], ".2f") + "x" + part,
            f"{res['requests']:,}",
            _fmt(res["samples_per_s"], ",.0f"),
            _fmt(res["samples_per_s"] / base if base else None, ".2f") + ("x" if base else ""),
            _fmt(res["first_batch"], ".2f"),
            _fmt(res["resume_first_batch"], ".2f", _note(errors, res["resume_error"])),
            _fmt(res["resume_bytes_ratio"], ".2f"),
            _fmt(res["tv"] / ref_tv, ".2f") + "x",
            _fmt(res["disk_peak_ratio"], ".2f") + "x",
            ("yes" if res["every_record_once"] else "NO") if res["complete"]
            else f"{res['fraction']:.0%} read",
        ])  # fmt: skip
    return rows


def _text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(results: list[tuple[Run, dict[str, Any]]], path: Path) -> str:
    """Bytes per epoch and mixing per configuration; returns a note for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(no plot: matplotlib is not installed in this environment)"
    shown = [(r, x) for r, x in results if r.net != "local" and "error" not in x]
    if not shown:
        return "(no plot: no run succeeded)"
    names = [f"{r.system}\n{r.net} c{r.cache:.0%} w{r.workers} W{r.world}" for r, _ in shown]
    colors = {"epochal": "tab:blue", "streaming": "tab:orange", "litdata": "tab:green"}
    fig, axes = plt.subplots(3, 1, figsize=(max(8, len(shown) * 0.55), 10), sharex=True)
    metrics = [("bytes_ratio", "bytes / store", True), ("disk_peak_ratio", "disk peak / bound", True),
               ("samples_per_s", "samples/s", False)]  # fmt: skip
    for ax, (key, title, log) in zip(axes, metrics):
        ax.bar(range(len(shown)), [x[key] for _, x in shown],
               color=[colors.get(r.system, "gray") for r, _ in shown])  # fmt: skip
        ax.set_ylabel(title)
        if log:
            ax.set_yscale("log")
            ax.axhline(1.0, color="black", linewidth=0.8)
    axes[-1].set_xticks(range(len(shown)), names, rotation=90, fontsize=7)
    fig.suptitle("Remote store through a counting proxy (label-ordered store)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return f"![bytes, disk and speed per configuration]({path.name})"


def write_report(
    args: argparse.Namespace, setup: Setup, text: str, plot_note: str, ref_tv: float,
    code: str, wall: float,
) -> Path:  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in setup.store_bytes.items())
    body = f"""# Remote-store benchmark

`python benchmarks/bench_remote.py{" --quick" if args.quick else ""}` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
code measured: {code}. {setup.n:,} records in label order ({args.classes} classes, 3,072-byte
images), stores: {sizes}. A moto S3 server on 127.0.0.1 (child process); each rank reads
through its own counting proxy. Networks: "free" (no added latency, no cap) and "slow"
({args.latency_ms:g} ms added per request, {args.bandwidth_mbs:g} MB/s per rank).
Batch {args.batch} per rank, a {args.step_ms:g} ms training step per batch (a sleep),
one shuffled epoch per run (time limit {args.time_limit:g} s; "in 40%": the bytes of the
part read before the limit). Whole run: {wall:.0f} s. Shared 2-core machine: timings are noisy (up to 2x);
bytes, mixing and disk figures are not.

Columns: bytes/store = GET bytes of all ranks' epochs / store bytes; GETs = their GET
requests; vs local = samples/s
over the same reader on the local copy (same W, workers, step); 1st batch = seconds to the
first batch cold (open included); resume = a fresh process with a cold cache resuming at
the middle of the epoch (seconds to its first batch, and the bytes it fetched until then);
mixing = mean TV distance of per-batch label histograms from the global one / the same for
a true global shuffle ({ref_tv:.3f}); disk peak/bound = the cache filesystem's peak use
(statvfs of a per-rank tmpfs, counting deleted-but-mapped files) / cache_size; once =
every record delivered exactly once across ranks.

```
{text}
```

{plot_note}
"""
    out.write_text(body)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        serve(argv[1])
        return 0
    if argv[:1] == ["--build"]:
        system, out, shard, data, n, classes = argv[1:7]
        images, labels = make_data(Path(data), int(n), int(classes))
        build(system, images, labels, Path(out), int(shard))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--quick", action="store_true", help="12,000 records, the slow network only"
    )
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mbs", type=float, default=100.0)
    parser.add_argument("--caches", type=float, nargs="+", default=[0.10, 0.25])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nets", nargs="+", default=["free", "slow"], choices=["free", "slow"])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument(
        "--full", action="store_true", help="every system at every cache and network"
    )
    parser.add_argument("--time-limit", type=float, default=40.0, help="seconds per epoch")
    parser.add_argument("--python", default=None, help="interpreter for the ranks "
                        "(default: benchmarks/.venv when it has the peers, else this one)")  # fmt: skip
    parser.add_argument(
        "--workdir", default=str(Path(tempfile.gettempdir()) / "epochal-bench-remote")
    )
    parser.add_argument("--no-tmpfs", action="store_true", help="cache on plain folders")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "remote.md"))
    parser.add_argument("--code", default="", help="what code is measured (for the report)")
    args = parser.parse_args(argv)
    if args.quick:
        args.records = 12_000 if args.records == 100_000 else args.records
        args.nets = ["slow"]
        args.time_limit = min(args.time_limit, 20.0)
    args.python = args.python or _bench_python()
    start = time.perf_counter()
    systems = []
    for system in args.systems:
        why = _unavailable(args.python, system)
        if why:
            print(f"  skip {system}: {why}")
        else:
            systems.append(system)
    print(f"remote benchmark: {args.records:,} records, systems {systems}, ranks run {args.python}")
    with moto_server(in_process=False) as server:
        setup = prepare(args, server, systems)
        ref_tv = _global_shuffle_tv(setup.labels, args.batch, args.classes)
        results = []
        try:
            for run in plan_runs(args, list(setup.urls)):
                t0 = time.perf_counter()
                res = run_one(setup, run)
                results.append((run, res))
                status = res.get("error") or (
                    f"bytes {res['bytes_ratio']:.2f}x, {res['samples_per_s']:,.0f} samples/s, "
                    f"first batch {res['first_batch']:.2f} s, resume "
                    f"{_fmt(res['resume_first_batch'], '.2f', str(res['resume_error']))} s, "
                    f"disk {_fmt(res['disk_peak_ratio'], '.2f')}x"
                )
                print(f"  {run.label:32} {time.perf_counter() - t0:5.1f} s  {status}", flush=True)
        finally:
            for process in setup.ranks.values():
                process.close()
    errors: list[str] = []
    rows = table(results, ref_tv, errors)
    text = _text(rows) + "".join(f"\nerror {i}: {e}" for i, e in enumerate(errors, 1))
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    note = plot(results, out.with_suffix(".png"))
    code = args.code or _git_code()
    path = write_report(args, setup, text, note, ref_tv, code,
                        time.perf_counter() - start)  # fmt: skip
    print(f"report: {path} ({note})")
    return 0


def _git_code() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"commit {head}"


def _bench_python() -> str:
    venv = HERE / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _unavailable(python: str, system: str) -> str | None:
    module = {"epochal": "epochal", "streaming": "streaming", "litdata": "litdata"}[system]
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_remote; "
        "bench_remote._import_streaming()"
        if system == "streaming"
        else f"import {module}"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO / "src")})  # fmt: skip
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return f"cannot import {module} in {python}: {lines[-1] if lines else proc.returncode}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
