"""Remote-store benchmark: a store on a local S3 server, read through a counting proxy.

The data is written in label order (records sorted by class, as ``epochal build`` of a
sorted class folder writes them): N records of a 3,072-byte uint8 image, an int64 label
(one of --classes) and an int64 index, built once per system (epochal's store, MosaicML
Streaming's MDS, LitData's chunks; the peers' builds are kept in --workdir between runs)
with shards of about store/40 (at most 8 MiB). A moto S3 server (a child process on
127.0.0.1) is started holding all three; it answers a range GET by reading only the range,
as S3 does (``s3_env.serve_ranges_in_place``: moto alone reads the whole object each time). Every
rank reads through its own :class:`CountingProxy` (its own "network link"), which counts
the bytes it delivers; the "slow" network adds --latency-ms per request and caps each link
at --bandwidth-mbs. The peers run in benchmarks/.venv (see docs/benchmarks/remote.md).

A run is one rank process per rank (W = 2: two processes with separate caches, as on two
nodes; each cache on its own tmpfs when this runs as root) that reads one shuffled epoch
with a --step-ms sleep per batch (the accelerator's time, during which prefetch may run),
cut at --time-limit seconds (bytes per epoch are then extrapolated, and marked "~"), then
resumes at 10%, 50% and 90% of the epoch, each on a cold cache, and takes one batch.
Measured per run: bytes per epoch / store, GETs, samples/s against the same reader on the
local copy, time to the first batch (cold and after each resume), batch mixing (mean TV
distance of batch label histograms over a global shuffle's), the cache disk's peak over
the bound, and whether every record came once. Results go to stdout and to
docs/benchmarks/remote.md (+ remote.png when matplotlib is installed).

    benchmarks/.venv/bin/python benchmarks/bench_remote.py        # 100,000 records (~309 MB)
    benchmarks/.venv/bin/python benchmarks/bench_remote.py --quick  # 12,000 records
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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
from s3_env import CountingProxy, fetch_traffic, free_port  # noqa: E402

sys.path.insert(0, str(HERE / "peers"))
# the peers harness's torchvision-stubbing import of Streaming, one copy for both benchmarks
import _systems  # noqa: E402, F401  (imports _systems_peers in the order the harness needs)
from _systems_peers import _import_streaming  # noqa: E402

IMAGE_BYTES = 3072
SYSTEMS = ("epochal", "streaming", "litdata")
RESUME_AT = (0.1, 0.5, 0.9)  # fractions of the epoch where a cold restart is measured
BUILT = ".built"  # marks a finished build folder
STUCK_GRACE = 15.0  # seconds past a run's budget before a reader without batches is given up


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


PRINTED: list[str] = []  # what the run printed, for the report verbatim


def say(text: str, **kwargs: Any) -> None:
    """Print ``text`` and keep it for the report."""
    PRINTED.append(text)
    print(text, **kwargs)


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

        if world > 1:
            _separate_streaming_nodes(streaming, rank)
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

        _litdata_allow_http()

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


def _litdata_allow_http() -> None:
    """Let LitData's obstore downloads use the proxy's http:// endpoint.

    LitData builds its obstore ``S3Store`` from the boto3 client's endpoint but passes no
    ``allow_http``, so every chunk GET to an http:// endpoint fails ("builder error:
    BadScheme"), and AWS_ALLOW_HTTP in the environment is not read there. Adding the flag
    keeps LitData's own (fast, async) download path instead of turning obstore off.
    """
    import obstore.store

    made = obstore.store.S3Store
    if getattr(made, "_allow_http_patched", False):
        return

    def s3_store(bucket: str, *, config: Any = None, **kwargs: Any) -> Any:
        return made(bucket, config={**(config or {}), "allow_http": True}, **kwargs)

    s3_store._allow_http_patched = True  # type: ignore[attr-defined]
    obstore.store.S3Store = s3_store  # type: ignore[misc]


def _separate_streaming_nodes(streaming: Any, rank: int) -> None:
    """Give this rank its own namespace of Streaming's shared-memory and lock-file names.

    W = 2 here is two "nodes" on one host, but Streaming names its shared memory (and its
    lock files in the temp dir) ``<prefix>_<name>`` host-wide, the prefix being the first
    free number. On two real nodes each has its own namespace; here both leaders picked
    prefix 0 at once (the hang of an earlier run), and with the search offset per rank that
    replaced it, ``clean_stale_shared_memory()`` of one rank (every rank is local rank 0, and
    it unlinks every prefix from 0 up that it can open) deleted the other rank's live
    ``/000000_locals``: the other rank then failed with ``FileNotFoundError: ...
    '/000000_locals'`` (the W = 2 start-up error). Prefixing every name Streaming builds
    with the rank (``_get_path``, the one function that makes them, in each module that
    imported it) gives what separate hosts give, the cleaning included.
    """
    import importlib

    from streaming.base.shared import prefix

    made = getattr(prefix, "_epochal_unranked_get_path", prefix._get_path)

    def ranked_path(prefix_int: int, name: str) -> str:
        return f"r{rank}_{made(prefix_int, name)}"

    for module in ("streaming.base.shared.prefix", "streaming.base.shared",
                   "streaming.base.dataset", "streaming.base.util"):  # fmt: skip
        mod = importlib.import_module(module)
        if hasattr(mod, "_get_path"):
            mod._get_path = ranked_path  # type: ignore[attr-defined]
    prefix._epochal_unranked_get_path = made  # type: ignore[attr-defined]


def _arrays(batch: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(batch["label"]).reshape(-1), np.asarray(batch["index"]).reshape(-1)


def _traffic(spec: dict[str, Any]) -> tuple[int, int]:
    """(GET bytes, GET requests) this rank's proxy has delivered for the store so far."""
    if spec["net"] == "local":
        return 0, 0
    got = fetch_traffic(spec["options"]["endpoint_url"], spec["prefix"])
    return got.bytes, got.requests


def _epoch(spec: dict[str, Any], cache: str) -> dict[str, Any]:
    """One shuffled epoch with the training step, cut at the run's time or sample budget.

    Right after the first batch it also makes the states of the resume positions (see
    :func:`_states_at`), so that a resume can be measured at positions the budget does not
    reach. The loop runs in a thread: a reader that never delivers (a peer thrashing its
    cache) is given up STUCK_GRACE seconds after the budget, with what it fetched so far.
    """
    step, limit, budget = spec["step_ms"] / 1000, spec["time_limit"], spec["max_samples"]
    disk_path = spec["disk"] or cache
    measure = tree_bytes if spec["disk_mode"] == "files" else None
    got: dict[str, Any] = {"labels": [], "indices": [], "states": [], "first": None,
                           "first_bytes": 0, "describe": "", "expected": 0}  # fmt: skip
    os.makedirs(cache, exist_ok=True)
    sampler = PeakSampler(disk_path, interval=0.005, **({"measure": measure} if measure else {}))

    def loop() -> None:
        try:
            loader = _open_loader(spec, cache)
            got["expected"] = len(loader)
            read = 0
            for batch in loader:
                labels, indices = _arrays(batch)
                if got["first"] is None:
                    got["first"] = time.perf_counter() - t0
                    got["first_bytes"] = _traffic(spec)[0]
                    got["states"] = _states_at(spec, loader, len(indices))
                    got["describe"] = _describe(loader)
                got["labels"].append(labels)
                got["indices"].append(indices)
                read += indices.size
                time.sleep(step)
                if time.perf_counter() - t0 > limit or (budget and read >= budget):
                    break
            got["end"] = time.perf_counter() - t0
            del loader
        except Exception as err:
            got["error"] = _one_line(err)
            got["traceback"] = traceback.format_exc()[-3000:]

    t0 = time.perf_counter()
    with sampler:
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        thread.join(limit + STUCK_GRACE)
        if thread.is_alive() and got["first"] is not None:
            thread.join(STUCK_GRACE)  # batches came: the loader is closing, not stuck
        elapsed = got.get("end", time.perf_counter() - t0)
    if "error" in got:
        raise RuntimeError(got["error"])
    labels, indices = list(got["labels"]), list(got["indices"])
    all_indices = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    got_bytes, got_requests = _traffic(spec)
    return {
        "stuck": thread.is_alive(),
        "seconds": elapsed,
        "first_batch": got["first"],
        "first_bytes": got["first_bytes"] if got["first"] is not None else got_bytes,
        "first_samples": int(indices[0].size) if indices else 0,
        "batches": len(labels),
        "expected_batches": got["expected"],
        "complete": bool(got["expected"]) and len(labels) >= got["expected"],
        "samples": int(all_indices.size),
        "labels": [b.tolist() for b in labels],
        "indices_file": _save_indices(spec, all_indices),
        "bytes": got_bytes,
        "requests": got_requests,
        "disk_peak": sampler.peak_above_baseline,
        "disk_samples": sampler.samples,
        "states": got["states"],
        "describe": got["describe"],
    }


def _describe(loader: Any) -> str:
    """epochal's own account of the order it chose (the windows), for the report."""
    text = loader.describe() if hasattr(loader, "describe") else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("order:")]
    return lines[0] if lines else ""


def _states_at(spec: dict[str, Any], loader: Any, batch: int) -> list[Any]:
    """Resume states at RESUME_AT of the epoch, made from the loader after its first batch.

    Every system's state is a position counted in samples: epochal's ``position`` (global
    samples), Streaming's ``sample_in_epoch`` (global) and LitData's samples yielded (per
    rank), so a state at another position is the same state with that count, made through
    each system's own ``state_dict`` where it takes the count as an argument.
    """
    system, world, workers = spec["system"], spec["world"], spec["workers"]
    states = []
    for at in RESUME_AT:
        per_rank = int(spec["n"] * at) // (batch * world) * batch  # whole batches
        try:
            if system == "epochal":
                state = dict(loader.state_dict())
                state["position"] = per_rank * world
            elif system == "streaming":
                state = loader.dataset.state_dict(per_rank * world, True)
            else:
                state = {
                    "dataset": loader.dataset.state_dict(per_rank, workers, batch),
                    "current_epoch": loader.current_epoch,
                    "num_samples_yielded": per_rank,
                    "latest_worker_idx": (per_rank // batch - 1) % max(1, workers),
                }
            states.append({"at": at, "state": _jsonable(state)})
        except Exception as err:
            states.append({"at": at, "state": None, "error": _one_line(err)})
    return states


def _jsonable(state: Any) -> Any:
    try:
        return json.loads(json.dumps(state))
    except TypeError:
        return None


def _save_indices(spec: dict[str, Any], indices: np.ndarray) -> str:
    path = f"{spec['out']}.indices.npy"
    np.save(path, indices)
    return path


def _resume(spec: dict[str, Any], cache: str, state: Any, limit: float) -> dict[str, Any]:
    """A restart's view: a fresh loader on a cold cache, the state loaded, one batch.

    The batch is awaited for at most ``limit`` seconds (in a thread: a peer's iterator may
    block); past it the result says so and the rank process exits after answering.
    """
    before = _traffic(spec)
    box: dict[str, Any] = {}

    def first_batch() -> None:
        try:
            loader = _open_loader(spec, cache)
            loader.load_state_dict(state)
            batch = next(iter(loader))
            box["seconds"] = time.perf_counter() - t0
            box["labels"] = _arrays(batch)[0].tolist()
        except Exception as err:
            box["error"] = _one_line(err)

    t0 = time.perf_counter()
    thread = threading.Thread(target=first_batch, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return {"error": f"no batch within {limit:.0f} s", "stuck": True}
    if "error" in box:
        return {"error": box["error"]}
    return {"first_batch": box["seconds"], "bytes": _traffic(spec)[0] - before[0]}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One rank's measurements of one run: the epoch, then resumes on cold caches."""
    os.environ.update(spec["env"])  # the peers read their endpoint and rank from it
    result: dict[str, Any] = {"rank": spec["rank"], "resumes": []}
    cache = os.path.join(spec["cache_root"], "epoch")
    try:
        result["epoch"] = _epoch(spec, cache)
    except Exception as err:
        result["error"] = _one_line(err)
        result["traceback"] = traceback.format_exc()[-3000:]
        return result
    if result["epoch"]["stuck"]:
        result["stuck"] = True  # the loader thread still runs: no resumes in this process
        result["resumes"] = [{"at": at, "error": "epoch gave up"} for at in RESUME_AT]
        return result
    shutil.rmtree(cache, ignore_errors=True)
    gc.collect()
    limit = spec["resume_limit"] / len(RESUME_AT)
    for made in result["epoch"].pop("states"):
        if made["state"] is None:
            got = {"error": made.get("error", "no resumable state")}
        else:
            # the epoch's cache folder, emptied: LitData's state names its cache folder
            shutil.rmtree(cache, ignore_errors=True)
            got = _resume(spec, cache, made["state"], limit)
            if got.get("stuck"):
                result["stuck"] = True
        result["resumes"].append({"at": made["at"], **got})
        if result.get("stuck"):
            break
        gc.collect()
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
        if result.get("stuck"):
            os._exit(0)  # a thread still blocks in the peer's iterator: start afresh
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
        self._ready = False
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
        result = json.loads(Path(line.removeprefix("done ")).read_text())
        if result.get("stuck"):
            self.kill()  # it exits by itself; wait for that so the next run starts afresh
        return result

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


# --------------------------------------------------------------------------- the server


def serve_moto(port: int, listing: str) -> None:
    """The S3 server child: moto's server with the stores put straight into its backend.

    Uploading ~1 GB through HTTP (signing, checksums, moto's request parsing) took minutes on
    the shared machine; putting the same bytes into moto's backend before it serves gives the
    same objects (same keys, sizes and ETags) in seconds. Serving is moto's own server.
    """
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer
    from s3_env import serve_ranges_in_place

    serve_ranges_in_place()  # O(range) per range GET, as S3: see the module's doc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    items = json.loads(Path(listing).read_text())
    backend.create_bucket(items["bucket"], "us-east-1")
    for key, path in items["objects"]:
        backend.put_object(items["bucket"], key, Path(path).read_bytes())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop()


@contextlib.contextmanager
def preloaded_moto(work: Path, stores: dict[str, Path], python: str) -> Iterator[Any]:
    """A moto S3 server (child process on 127.0.0.1) holding ``stores`` (name -> folder)."""
    from s3_env import BUCKET, S3Server

    objects = [
        (f"{name}/{p.relative_to(folder)}", str(p))
        for name, folder in stores.items()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != BUILT
    ]
    listing = work / "moto-objects.json"
    listing.write_text(json.dumps({"bucket": BUCKET, "objects": objects}))
    port = free_port()
    env = os.environ | {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    proc = subprocess.Popen([python, __file__, "--moto", str(port), str(listing)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the moto server child did not start")
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                               "AWS_DEFAULT_REGION")})  # fmt: skip
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}", bucket=BUCKET)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    argv: list[str]


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
    # local reads only give the reference rate: a shorter budget measures it as well
    limit = args.time_limit if run.net != "local" else min(args.time_limit, args.local_limit)
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
                            lifetime=args.time_limit + args.resume_limit + 600,
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
                "time_limit": limit, "max_samples": args.max_samples, "n": setup.n,
                "resume_limit": args.resume_limit, "cache_bytes": cache_bytes,
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
        timeout = limit + args.resume_limit + 120
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
    distinct = bool(np.unique(indices).size == indices.size)
    store_bytes = setup.store_bytes[run.system]
    got = sum(e["bytes"] for e in epochs)
    per_epoch = sum(_epoch_bytes(e, setup.n // run.world) for e in epochs)
    resumes = []
    for k, at in enumerate(RESUME_AT):
        mine = [r["resumes"][k] for r in results if len(r["resumes"]) > k]
        failed = [x["error"] for x in mine if "error" in x]
        if len(mine) < len(results) or failed:
            resumes.append({"at": at, "error": failed[0] if failed else "not measured"})
        else:
            resumes.append({
                "at": at,
                "first_batch": max(x["first_batch"] for x in mine),
                "bytes": sum(x["bytes"] for x in mine),
            })  # fmt: skip
    first_bytes = sum(e["first_bytes"] for e in epochs)
    return {
        "complete": complete,
        "fraction": fraction,
        "every_record_once": once,
        "no_repeats": distinct,
        "bytes_read": got / store_bytes,
        "bytes_ratio": per_epoch / store_bytes,
        "extrapolated": not complete,
        "requests": sum(e.get("requests", 0) for e in epochs),
        "samples_per_s": statistics.median(e["samples"] / e["seconds"] for e in epochs),
        "steady_per_s": statistics.median(_steady(e) for e in epochs),
        # a rank without any batch: its wait so far (a lower bound), the "read" column says so
        "first_batch": max(
            e["seconds"] if e["first_batch"] is None else e["first_batch"] for e in epochs
        ),
        "first_bytes": first_bytes,
        "resumes": resumes,
        "tv": _tv_mean(batches, classes, hist),
        "disk_peak_ratio": None
        if run.net == "local"
        else max(e["disk_peak"] for e in epochs) / cache_bytes,
        "cache_bytes": cache_bytes,
        "describe": sorted({e["describe"] for e in epochs if e.get("describe")}),
    }


def _steady(epoch: dict[str, Any]) -> float:
    """Samples/s after the first batch (0 where no second batch came)."""
    if epoch["first_batch"] is None or epoch["samples"] <= epoch["first_samples"]:
        return 0.0
    return (epoch["samples"] - epoch["first_samples"]) / (epoch["seconds"] - epoch["first_batch"])


def _epoch_bytes(epoch: dict[str, Any], samples: int) -> float:
    """A rank's bytes for its whole epoch: measured when complete, else extrapolated.

    The extrapolation is the bytes until the first batch (the first window and whatever
    prefetch had started) plus the bytes per sample after it times the rest of the epoch:
    prefetch keeps fetching ahead of the read position, so scaling the total by the fraction
    read would count that lead once per fraction and overstate a short run.
    """
    if epoch["complete"]:
        return float(epoch["bytes"])
    after = epoch["samples"] - epoch["first_samples"]
    if after <= 0:
        return float("nan")
    rate = (epoch["bytes"] - epoch["first_bytes"]) / after
    return epoch["first_bytes"] + rate * max(0, samples - epoch["first_samples"])


def prepare(args: argparse.Namespace, systems: list[str]) -> Setup:
    """Generate the data and build each system's copy locally (the server comes after)."""
    work = Path(args.workdir)
    (work / "caches").mkdir(parents=True, exist_ok=True)
    images, labels = make_data(work / "data", args.records, args.classes)
    raw = images.nbytes + labels.nbytes
    shard = args.shard_bytes or int(min(8 << 20, max(256 << 10, raw // 40)))
    ranks = {
        (system, rank): RankProcess(args.python, system, work / f"{system}-rank{rank}.log")
        for system in systems
        for rank in range(max([r.world for r in plan_runs(args, [system])], default=1))
    }
    for process in ranks.values():  # their imports overlap with the builds below
        process.start()
    local_paths, sizes = {}, {}
    for system in systems:
        t0 = time.perf_counter()
        out = work / f"{system}-{args.records}-{args.classes}-{shard}"
        done = out / BUILT  # the peers' builds do not depend on epochal: kept between runs
        try:
            if done.exists() and system != "epochal" and not args.rebuild:
                pass
            elif system != "epochal":  # the peers build in the bench python (their own venv)
                subprocess.run([args.python, __file__, "--build", system, str(out), str(shard),
                                str(work / "data"), str(args.records), str(args.classes)],
                               check=True, capture_output=True, text=True,
                               env=os.environ | {"PYTHONPATH": str(REPO / "src")})  # fmt: skip
            else:
                build(system, images, labels, out, shard)
        except subprocess.CalledProcessError as err:
            lines = [ln for ln in err.stderr.splitlines() if ln.strip()]
            say(f"  skip {system}: its build failed: {lines[-1] if lines else err}")
            continue
        built = time.perf_counter() - t0
        done.touch()
        local_paths[system] = str(out)
        sizes[system] = tree_bytes(out)
        files = sum(1 for p in out.rglob("*") if p.is_file() and p.name != BUILT)
        say(f"  {system:9} {sizes[system] / 1e6:7.1f} MB in {files} files, "
            f"built in {built:5.1f} s{'' if built > 1 else ' (kept from an earlier run)'}",
            flush=True)  # fmt: skip
    return Setup(args=args, python=args.python, work=work, n=args.records, store_bytes=sizes,
                 urls={}, locals=local_paths, server=None, labels=np.asarray(labels),
                 ranks=ranks, argv=args.argv)  # fmt: skip


def probe_links(setup: Setup) -> str:
    """What one rank's link delivers: 8 concurrent whole-shard GETs (MB/s) and the median
    round trip of a 1 KiB range GET, without and with the slow network's settings."""
    from concurrent.futures import ThreadPoolExecutor

    import s3fs

    args = setup.args
    url = setup.urls[next(iter(setup.urls))].removeprefix("s3://")
    fs = s3fs.S3FileSystem(**setup.server.options, skip_instance_cache=True)
    shards = sorted(fs.find(url, detail=True).values(), key=lambda f: -f["size"])[:8]
    lines = []
    for net in args.nets:
        slow = net == "slow"
        proxy = CountingProxy(setup.server.endpoint_url,
                              latency=args.latency_ms / 1000 if slow else 0.0,
                              bandwidth=args.bandwidth_mbs * 1e6 if slow else None)  # fmt: skip
        with proxy:
            pfs = s3fs.S3FileSystem(**proxy.options, skip_instance_cache=True)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                got = sum(len(b) for b in pool.map(pfs.cat, [f["name"] for f in shards]))
            rate = got / (time.perf_counter() - t0) / 1e6
            trips = []
            for k in range(9):
                t0 = time.perf_counter()
                pfs.cat_file(shards[k % len(shards)]["name"], start=0, end=1024)
                trips.append(time.perf_counter() - t0)
        lines.append(f"  link {net}: 8 concurrent whole-shard GETs {rate:.1f} MB/s, "
                     f"1 KiB range GET {statistics.median(trips) * 1000:.0f} ms")  # fmt: skip
    return "\n".join(lines)


# The default configurations (system, net, cache, workers, W): the axes one at a
# time around epochal's slow-network run at 25%, and the peers where they differ most
# (a full product took far over the ~15 minutes a run may take on the shared machine).
DEFAULT_PLAN = [
    *[("epochal", "local", 1.0, w, ws) for w, ws in ((0, 1), (2, 1), (0, 2), (2, 2))],
    ("epochal", "slow", 0.25, 0, 1), ("epochal", "slow", 0.10, 0, 1),
    ("epochal", "free", 0.25, 0, 1), ("epochal", "slow", 0.25, 2, 1),
    ("epochal", "slow", 0.25, 0, 2), ("epochal", "slow", 0.10, 0, 2),
    ("epochal", "slow", 0.25, 2, 2),
    ("streaming", "local", 1.0, 0, 1), ("streaming", "slow", 0.25, 0, 1),
    ("streaming", "slow", 0.25, 0, 2),
    ("litdata", "local", 1.0, 0, 1), ("litdata", "slow", 0.25, 0, 1),
    ("litdata", "local", 1.0, 0, 2), ("litdata", "slow", 0.25, 0, 2),
    ("litdata", "local", 1.0, 2, 1), ("litdata", "slow", 0.25, 2, 1),
]  # fmt: skip


def plan_runs(args: argparse.Namespace, systems: list[str]) -> list[Run]:
    """DEFAULT_PLAN (of the systems that could run), or with --full every combination of
    the --caches, --workers, --worlds and --nets asked for."""
    if not args.full:
        return [Run(system=s, net=n, cache=c, workers=w, world=ws)
                for s, n, c, w, ws in DEFAULT_PLAN
                if s in systems and w in args.workers and ws in args.worlds
                and (n == "local" or (n in args.nets and c in args.caches))]  # fmt: skip
    runs = []
    for system in systems:
        for workers in args.workers:
            for world in args.worlds:
                runs.append(
                    Run(system=system, net="local", cache=1.0, workers=workers, world=world)
                )
                for net in args.nets:
                    for cache in args.caches:
                        runs.append(Run(system=system, net=net, cache=cache,
                                        workers=workers, world=world))  # fmt: skip
    return runs


def _fmt(x: Any, spec: str, none: str = "-") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return none
    return format(x, spec)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _note(errors: list[str], error: str | None) -> str:
    if not error:
        return "-"
    if error not in errors:
        errors.append(error)
    return f"e{errors.index(error) + 1}"


def table(
    results: list[tuple[Run, dict[str, Any]]], ref_tv: float, errors: list[str]
) -> list[list[str]]:
    """The report's rows; the text of each failed measurement goes to ``errors``."""
    local = {
        (r.system, r.workers, r.world): res
        for r, res in results
        if r.net == "local" and "error" not in res
    }
    rows = [["system", "net", "cache", "wk", "W", "bytes/epoch", "GETs", "samples/s",
             "vs local", "steady vs local", "1st batch s", "resume 1st s 10/50/90%",
             "resume/cold bytes", "mixing", "disk/bound", "read"]]  # fmt: skip
    for run, res in results:
        if run.net == "local":
            continue
        head = [run.system, run.net, f"{run.cache:.0%}", str(run.workers), str(run.world)]
        if "error" in res:
            rows.append([*head, f"error: {_note(errors, res['error'])}"])
            continue
        base = local.get((run.system, run.workers, run.world))
        rate = _fmt(_ratio(res["samples_per_s"], base["samples_per_s"]) if base else None, ".2f")
        steady = _fmt(_ratio(res["steady_per_s"], base["steady_per_s"]) if base else None, ".2f")
        resume_s, resume_b = [], []
        for x in res["resumes"]:
            if "error" in x:
                resume_s.append(_note(errors, x["error"]))
                continue
            resume_s.append(f"{x['first_batch']:.1f}")
            if res["first_bytes"]:
                resume_b.append(x["bytes"] / res["first_bytes"])
        if res["complete"]:
            read = "all, once" if res["every_record_once"] else "all, NOT once"
        else:
            read = f"{res['fraction']:.0%}" + ("" if res["no_repeats"] else ", REPEATS")
        rows.append([
            *head,
            ("~" if res["extrapolated"] else "") + _fmt(res["bytes_ratio"], ".2f") + "x",
            f"{res['requests']:,}",
            _fmt(res["samples_per_s"], ",.0f"),
            rate + ("x" if base else ""),
            steady + ("x" if base else ""),
            _fmt(res["first_batch"], ".1f"),
            "/".join(resume_s),
            f"{max(resume_b):.2f}x" if resume_b else "-",
            _fmt(res["tv"] / ref_tv, ".2f") + "x",
            _fmt(res["disk_peak_ratio"], ".2f") + "x",
            read,
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


def plot(results: list[tuple[Run, dict[str, Any]]], path: Path, ref_tv: float) -> str:
    """Bytes, speed, first batches, mixing and disk per configuration; returns a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(no plot: matplotlib is not installed in the bench environment)"
    local = {(r.system, r.workers, r.world): x for r, x in results
             if r.net == "local" and "error" not in x}  # fmt: skip
    shown = [(r, x) for r, x in results if r.net != "local" and "error" not in x]
    if not shown:
        return "(no plot: no run succeeded)"
    names = [f"{r.system} {r.net} c{r.cache:.0%}\nw{r.workers} W{r.world}" for r, _ in shown]
    colors = [{"epochal": "tab:blue", "streaming": "tab:orange", "litdata": "tab:green"}
              .get(r.system, "gray") for r, _ in shown]  # fmt: skip
    xs = np.arange(len(shown))

    def vs_local(r: Run, x: dict[str, Any]) -> float:
        base = local.get((r.system, r.workers, r.world))
        return x["steady_per_s"] / base["steady_per_s"] if base else float("nan")

    fig, axes = plt.subplots(5, 1, figsize=(max(9, len(shown) * 0.6), 15), sharex=True)
    bars = [
        ("bytes per epoch / store\n(hatched: extrapolated)", [x["bytes_ratio"] for _, x in shown], True, 1.1),
        ("steady samples/s\n/ local", [vs_local(r, x) for r, x in shown], False, 0.8),
        ("mixing: batch TV\n/ global shuffle's", [x["tv"] / ref_tv for _, x in shown], False, 1.25),
        ("disk peak / bound", [x["disk_peak_ratio"] for _, x in shown], True, 1.0),
    ]  # fmt: skip
    for ax, (title, values, log, goal) in zip([axes[0], axes[1], axes[3], axes[4]], bars):
        drawn = ax.bar(xs, values, color=colors)
        for bar, (_, x) in zip(drawn, shown):
            if title.startswith("bytes") and x["extrapolated"]:
                bar.set_hatch("//")
        ax.set_ylabel(title, fontsize=8)
        ax.axhline(goal, color="black", linewidth=0.8, linestyle="--")
        if log:
            ax.set_yscale("log")
    ax = axes[2]
    ax.plot(xs, [x["first_batch"] for _, x in shown], "k_", markersize=14, label="cold")
    for k, marker in enumerate(("1", "2", "3")):
        ys = [x["resumes"][k].get("first_batch", np.nan) for _, x in shown]
        ax.plot(xs, ys, marker, linestyle="", markersize=9,
                label=f"resume at {RESUME_AT[k]:.0%}")  # fmt: skip
    ax.set_ylabel("first batch, s", fontsize=8)
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncols=4)
    axes[-1].set_xticks(xs, names, rotation=90, fontsize=7)
    fig.suptitle("Label-ordered store on a local S3 server, each rank behind its own proxy "
                 "(dashed: the issue's goals)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"![bytes, speed, first batches, mixing and disk per configuration]({path.name})"


def write_report(
    args: argparse.Namespace, setup: Setup, output: str, plot_note: str, ref_tv: float,
    code: str, layouts: list[str],
) -> Path:  # fmt: skip
    """docs/benchmarks/remote.md: how it was measured, then the printed output verbatim."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in setup.store_bytes.items())
    consumption = args.batch * (IMAGE_BYTES + 16) / (args.step_ms / 1000) / 1e6
    command = " ".join(["python benchmarks/bench_remote.py", *setup.argv])
    layout_lines = "\n".join(f"    {line}" for line in layouts) or "    (none recorded)"
    body = f"""# Remote-store benchmark (`benchmarks/bench_remote.py`)

`{command.strip()}`, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, code measured:
{code}. The machine was shared (2 cores, other engineers' jobs running): timings vary by up to
2x between runs; bytes, GETs, mixing, disk and "once" do not depend on the load.

## Set-up
- Data: {setup.n:,} records in label order (records sorted by class, as `epochal build` of a
  sorted class folder writes them): a {IMAGE_BYTES:,}-byte uint8 image, an int64 label
  ({args.classes} classes) and an int64 index. Stores: {sizes}; shards of about store/40
  for every system (at most 8 MiB).
- Server: moto's S3 server, a child process on 127.0.0.1, patched to answer a range GET
  by reading only the range, as S3 does (`serve_ranges_in_place` in `tests/store/s3_env.py`;
  moto 5 alone copies the whole object out of its buffer for every GET and slices the range
  from the copy: ~1.3-2 of its ~5.5-7 ms of CPU per GET of a block of an 8 MiB shard). The
  patch changes only that read, and every system reads from the same server. Each rank reads through its own
  counting proxy (`tests/store/s3_env.py`), which counts the GET bytes and requests it
  delivers. "free": no added latency, no cap. "slow": {args.latency_ms:g} ms added to every
  request and a {args.bandwidth_mbs:g} MB/s cap per rank. What the links delivered in this
  run is in the output's `link` lines (moto and the Python proxy share the 2 cores, so
  the "free" link is not much faster than the cap).
- Training loop: batches of {args.batch} per rank and a {args.step_ms:g} ms step per batch
  (a sleep standing for the accelerator), so one rank consumes {consumption:.1f} MB/s at
  most, below what one link delivers: the goal "the loop never waits on the network after
  the first window" can be met. W = 2 is two processes with separate caches (two nodes);
  the cache of each rank is on its own tmpfs, whose statvfs peak is the disk figure.
- Budget: each remote run reads its epoch for {args.time_limit:g} s at most (local runs
  {args.local_limit:g} s), then stops. A run that did not finish the epoch shows "~" before
  its bytes per epoch: **extrapolated** as the bytes until the first batch plus the bytes
  per sample after it times the rest of the epoch (scaling the total by the fraction read
  would count the prefetch lead again), and "read" says how much was read.
- Resume: after the epoch, for each of {", ".join(f"{a:.0%}" for a in RESUME_AT)} of the epoch,
  a fresh loader on a fresh cold cache loads the state of that position and takes one batch
  ({args.resume_limit / len(RESUME_AT):g} s at most each). The states are made from the loader after
  its first batch with the position set, through each system's own `state_dict` (all three
  count positions in samples), so positions the budget does not reach are measured too.

## Columns
- bytes/epoch: GET bytes of all ranks for one epoch / the store's bytes (goal <= 1.1x).
- GETs: GET requests of the part read. samples/s: per rank over the part read, the first
  batch included (median of ranks); vs local: over the same reader on the local copy of
  the same store (same workers, W and step, measured in this run; goal >= 0.8x with the
  slow network); steady vs local: the same after the first batch.
- 1st batch s: seconds to the first batch on a cold cache, opening included. resume 1st s:
  the same after a resume at 10/50/90% (goal: one window or less, flat in position: about
  the cold first batch). resume/cold bytes: the most bytes a resume fetched before its
  first batch / the bytes the cold start fetched before its first (1.00x = one window).
- mixing: mean total-variation distance between each batch's label histogram and the
  global one, over the same for a true global shuffle of these labels ({ref_tv:.3f});
  1.00x = a global shuffle (goal <= 1.25x).
- disk/bound: the cache filesystem's peak use / cache_size (goal <= 1 + one shard/block).
- read: the part of the epoch read; "all, once" = every record exactly once across ranks.

## epochal's chosen layouts (from `loader.describe()`)

{layout_lines}

## Output (verbatim)

```
{output}
```

{plot_note}
"""
    out.write_text(body)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        serve(argv[1])
        return 0
    if argv[:1] == ["--moto"]:
        serve_moto(int(argv[1]), argv[2])
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
    parser.add_argument("--step-ms", type=float, default=80.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mbs", type=float, default=25.0)
    parser.add_argument("--caches", type=float, nargs="+", default=[0.10, 0.25])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nets", nargs="+", default=["free", "slow"], choices=["free", "slow"])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument(
        "--full", action="store_true", help="every system at every cache and network"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=20.0,
        help="seconds of epoch per remote run (the rest is extrapolated)",
    )
    parser.add_argument(
        "--local-limit", type=float, default=6.0, help="seconds of epoch per local (reference) run"
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        default=0,
        help="samples per rank per run at most (0: the time limit only)",
    )
    parser.add_argument("--resume-limit", type=float, default=15.0,
                        help="seconds for a run's resumes together (each on a cold cache)")  # fmt: skip
    parser.add_argument("--python", default=None, help="interpreter for the ranks "
                        "(default: benchmarks/.venv when it has the peers, else this one)")  # fmt: skip
    parser.add_argument(
        "--workdir", default=str(Path(tempfile.gettempdir()) / "epochal-bench-remote")
    )
    parser.add_argument("--shard-bytes", type=int, default=0,
                        help="shard size of every system (default: store/40, at most 8 MiB)")  # fmt: skip
    parser.add_argument("--rebuild", action="store_true", help="rebuild the peers' stores")
    parser.add_argument("--no-tmpfs", action="store_true", help="cache on plain folders")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "remote.md"))
    parser.add_argument("--code", default="", help="what code is measured (for the report)")
    args = parser.parse_args(argv)
    args.argv = argv
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
            say(f"  skip {system}: {why}")
        else:
            systems.append(system)
    say(f"remote benchmark: {args.records:,} records, systems {systems}, ranks run {args.python}")
    setup = prepare(args, systems)
    t0 = time.perf_counter()
    names = {system: f"{system}-{args.records}" for system in setup.locals}
    stores = {names[s]: Path(p) for s, p in setup.locals.items()}
    with preloaded_moto(setup.work, stores, args.python) as server:
        setup.server = server
        setup.urls = {system: server.url(name) for system, name in names.items()}
        say(f"  moto server on {server.endpoint_url} holding the stores, "
            f"started in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        links = probe_links(setup)
        say(links, flush=True)
        ref_tv = _global_shuffle_tv(setup.labels, args.batch, args.classes)
        results = []
        try:
            for run in plan_runs(args, list(setup.urls)):
                t0 = time.perf_counter()
                res = run_one(setup, run)
                results.append((run, res))
                status = res.get("error") or _status(res)
                say(f"  {run.label:32} {time.perf_counter() - t0:5.1f} s  {status}", flush=True)
        finally:
            for process in setup.ranks.values():
                process.close()
    errors: list[str] = []
    rows = table(results, ref_tv, errors)
    text = _text(rows) + "".join(f"\nerror {i}: {e}" for i, e in enumerate(errors, 1))
    say(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    note = plot(results, out.with_suffix(".png"), ref_tv)
    code = args.code or _git_code()
    say(f"whole run {time.perf_counter() - start:.0f} s")
    layouts = [f"{r.label}: {line}" for r, x in results if r.system == "epochal"
               for line in x.get("describe", [])]  # fmt: skip
    path = write_report(args, setup, "\n".join(PRINTED), note, ref_tv, code, layouts)
    print(f"report: {path} ({note})")
    return 0


def _status(res: dict[str, Any]) -> str:
    """One run's figures on one line, as they come (the table follows at the end)."""
    resumes = ", ".join(
        f"{x['at']:.0%}: " + (x["error"] if "error" in x else f"{x['first_batch']:.2f} s")
        for x in res["resumes"]
    )
    read = "all" if res["complete"] else f"{res['fraction']:.1%}"
    return (
        f"read {read}, bytes {res['bytes_read']:.3f}x (per epoch {res['bytes_ratio']:.3f}x), "
        f"{res['requests']:,} GETs, {res['samples_per_s']:,.0f} samples/s "
        f"(steady {res['steady_per_s']:,.0f}), first batch {res['first_batch']:.2f} s "
        f"({res['first_bytes'] / 1e6:.1f} MB), resume {resumes}, "
        f"disk {_fmt(res['disk_peak_ratio'], '.2f')}x"
    )


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
