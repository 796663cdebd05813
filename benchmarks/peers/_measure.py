"""Measurements of one system, run in their own process: ``python _measure.py SPEC OUT``.

SPEC is a JSON object (system, kind, measure, data, raw, config, workers, repeats,
time_limit, seed), or a list of them run in turn; the result (or list of results) is
written to OUT as JSON. Measures:

- ``build``: write the dataset in the system's format; seconds and bytes on disk.
- ``epoch``: shuffled epochs (batch 256), samples/s per repeat, the first repeat's order
  (for shuffle quality) and the process's peak RSS (self and its largest worker).
- ``resume``: consume 75% of an epoch (150,000 of 200,000), save, build a fresh loader
  (optionally with other workers / world size), restore: time to the first batch and
  whether the rest equals the uninterrupted run.
- ``ranks``: world_size 4 simulated in this process: records each rank reads.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import open_raw, warm
from _systems import get_system

__all__ = ["main", "shuffle_quality"]

BATCH = 256
_REFERENCE: dict[tuple[Any, ...], tuple[np.ndarray, int, Any]] = {}  # see _resume


def shuffle_quality(order: np.ndarray, n: int) -> dict[str, float]:
    """Mean |position - source index| / n, and the share of the first 1% from the first 10%.

    A uniform global shuffle gives ~1/3 and ~0.10; a sequential read gives 0 and 1.0.
    ``order`` may be the first part of an epoch (a time-limited run): the mean is then
    over the positions seen.
    """
    order = np.asarray(order, np.int64)
    head = order[: max(1, n // 100)]
    return {
        "mean_displacement": float(np.abs(order - np.arange(len(order))).mean() / n),
        "head_from_first_10pct": float((head < n / 10).mean()),
        "positions": len(order),
    }


def _peak_rss_mb() -> dict[str, float]:
    """Peak RSS of this process (VmHWM) and of its largest finished child, in MB.

    ``ru_maxrss`` of RUSAGE_SELF is not used for this process: Linux carries it across
    ``exec``, so it would start at the peak of the process that started this one.
    """
    to_mb = 1 / 1024  # both figures are in KiB
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/status") as f:
        own = next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")), own)
    return {
        "self": own * to_mb,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb,
    }


def _open(spec: dict[str, Any], **kw: Any) -> Any:
    system = get_system(spec["system"])
    args = {"config": spec["config"], "workers": spec["workers"], "seed": spec["seed"]} | kw
    return system.open(Path(spec["data"]), Path(spec["raw"]), **args)


def _build(spec: dict[str, Any]) -> dict[str, Any]:
    system = get_system(spec["system"])
    raw, out = open_raw(Path(spec["raw"])), Path(spec["data"])
    start = time.perf_counter()
    system.build(raw, out)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0
    return {"seconds": seconds, "bytes": size, "raw_bytes": raw.nbytes}


def _epoch(spec: dict[str, Any]) -> dict[str, Any]:
    n = open_raw(Path(spec["raw"])).n
    warm(Path(spec["data"]))
    warm(Path(spec["raw"]))
    rates, covered, first_order = [], [], None
    for repeat in range(spec["repeats"]):
        handle = _open(spec)
        gc.collect()
        seen, order = 0, []
        start = time.perf_counter()
        for labels in handle.batches():
            seen += len(labels)
            order.append(labels)
            if time.perf_counter() - start > spec["time_limit"]:
                break
        rates.append(seen / (time.perf_counter() - start))
        covered.append(seen / n)
        if repeat == 0:
            first_order = np.concatenate(order)
        del handle
    assert first_order is not None
    return {
        "rates": rates,
        "covered": covered,
        "quality": shuffle_quality(first_order, n),
        "complete_once": bool(np.array_equal(np.sort(first_order), np.arange(n))),
        "rss_mb": _peak_rss_mb(),
    }


def _consume(handle: Any, count: int, deadline: float) -> tuple[list[np.ndarray], Any, float]:
    """Batches up to ``count`` samples, the state then, and the rest of the epoch."""
    head, state = [], None
    it = handle.batches()
    for labels in it:
        head.append(labels)
        if sum(len(x) for x in head) >= count:
            state = handle.state_dict()
            break
        if time.perf_counter() > deadline:
            raise TimeoutError("time limit reached before the resume point")
    return head, state, it


def _resume(spec: dict[str, Any]) -> dict[str, Any]:
    n = open_raw(Path(spec["raw"])).n
    warm(Path(spec["data"]))
    deadline = time.perf_counter() + spec["time_limit"]
    count = (int(n * 0.75) // BATCH) * BATCH
    key = (spec["system"], spec["kind"], spec["config"], spec["workers"])
    if key not in _REFERENCE:  # the uninterrupted epoch, shared by the resume variants
        first = _open(spec)
        if not first.stateful:
            return {"supported": False}
        head, state, it = _consume(first, count, deadline)
        tail = list(it)
        _REFERENCE[key] = (np.concatenate(head + tail), int(sum(len(x) for x in head)), state)
        del first, it
        gc.collect()
    reference, consumed, state = _REFERENCE[key]
    after_workers = spec.get("resume_workers", spec["workers"])
    after_world = spec.get("resume_world", 1)
    start = time.perf_counter()
    resumed: list[np.ndarray] = []
    error = None
    try:
        handles = [
            _open(spec, workers=after_workers, rank=r, world_size=after_world)
            for r in range(after_world)
        ]
        for handle in handles:
            handle.load_state_dict(state)
        iters = [h.batches() for h in handles]
        first_batch = None
        while True:  # ranks' batches interleaved = the global batch order
            step = [next(i, None) for i in iters]
            if first_batch is None:
                first_batch = time.perf_counter() - start
            if all(s is None for s in step):
                break
            resumed.extend(s for s in step if s is not None)
    except Exception as exc:  # a system that refuses the change: reported, not fatal
        error = f"{type(exc).__name__}: {exc}"
        first_batch = None
    got = np.concatenate(resumed) if resumed else np.zeros(0, np.int64)
    expected = reference[consumed:]
    return {
        "supported": True,
        "consumed": consumed,
        "first_batch_s": first_batch,
        "equal": bool(np.array_equal(got, expected)),
        "same_set": bool(np.array_equal(np.sort(got), np.sort(expected))),
        "resumed_samples": len(got),
        "expected_samples": len(expected),
        "error": error,
        "quality": shuffle_quality(reference, n),
        "complete_once": bool(np.array_equal(np.sort(reference), np.arange(n))),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _ranks(spec: dict[str, Any]) -> dict[str, Any]:
    n, world = open_raw(Path(spec["raw"])).n, 4
    system = get_system(spec["system"])
    per_rank = []
    for rank in range(world):
        if system.name == "streaming":  # its partitioning needs 4 live processes; ask it
            from _systems_peers import _mds_rank_indices

            delivered = _mds_rank_indices(Path(spec["data"]), n, spec["seed"], rank, world)
            touched = len(delivered)
        else:
            handle = _open(spec, rank=rank, world_size=world)
            delivered = np.concatenate(list(handle.batches()))
            counter = getattr(handle, "counter", None)
            touched = counter.count if counter is not None else len(delivered)
        per_rank.append({"delivered": len(delivered), "unique": len(np.unique(delivered)),
                         "touched": int(touched), "ids": delivered})  # fmt: skip
    union = np.unique(np.concatenate([r.pop("ids") for r in per_rank]))
    return {"per_rank": per_rank, "union": len(union), "n": n}


def main(argv: list[str]) -> int:
    """Run one spec (a JSON object) or several in turn (a JSON list), write the result(s)."""
    import torch  # noqa: F401  (imported before any timing: every loader here needs it)

    specs = json.loads(argv[0])
    measure = {"build": _build, "epoch": _epoch, "resume": _resume, "ranks": _ranks}
    if isinstance(specs, dict):
        result: Any = measure[specs["measure"]](specs)
    else:
        result = []
        for spec in specs:
            try:
                result.append(measure[spec["measure"]](spec))
            except Exception as exc:  # one failed measurement must not hide the others
                result.append({"error": f"{type(exc).__name__}: {exc}"})
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
