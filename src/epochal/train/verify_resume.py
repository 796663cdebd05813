"""``epochal verify-resume``: prove that a killed-and-resumed run ends bitwise identical.

The job (a run config, or a small built-in one with shuffling, augmentation, dropout, two
loader workers and an LR schedule) runs twice in subprocesses: once uninterrupted, and
once SIGKILLed at K random steps, restarted after each kill on the same run directory.
Some kills land after an optimizer step and some in the middle of a checkpoint write
(after the temporary file is written, before it replaces anything). The final
checkpoints of both runs are then compared bit for bit (model weights, optimizer state,
LR scheduler, loader position, RNG states) together with the data order of every step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import tyro

from epochal._errors import Error
from epochal.train.checkpoint import Checkpointer
from epochal.train.config import (
    DataConfig,
    OptimConfig,
    RunConfig,
    TrainerConfig,
    from_dict,
    load_file,
    save_config,
)

__all__ = ["VerifyConfig", "compare_payloads", "default_job", "main", "verify"]

_PAUSE_ENV = "EPOCHAL_PAUSE_AT"


@dataclasses.dataclass(kw_only=True)
class VerifyConfig:
    """Options of `epochal verify-resume`."""

    job: tyro.conf.Positional[str | None] = None
    """Run config file of the job to verify (.json/.toml/.yaml); default: a small built-in job."""
    workdir: str = "runs/verify-resume"
    """Directory for the two runs (its 'reference' and 'killed' subdirectories are replaced)."""
    kills: int = 3
    """How many times to SIGKILL the second run."""
    write_kills: int | None = None
    """How many of the kills land during a checkpoint write (default: half, rounded up)."""
    seed: int = 0
    """Seed for choosing the steps to kill at."""
    timeout: float = 600.0
    """Seconds each subprocess may run before the verification gives up."""


def default_job() -> RunConfig:
    """A small job that exercises everything a resume must restore, in seconds on a CPU."""
    return RunConfig(
        run_dir="unused",
        seed=0,
        device="cpu",
        data=DataConfig(
            train="shapes:train:256",  # 8 steps per epoch: kills land mid-epoch and on edges
            val="shapes:val:64",
            batch_size=32,
            num_workers=2,
            augment=True,
        ),
        optim=OptimConfig(name="sgd", lr=0.05, warmup_steps=4, schedule="cosine"),
        trainer=TrainerConfig(
            max_steps=24, checkpoint_every=3, eval_every=6, keep_last=1, log_every=5, progress=False
        ),
    )


def compare_payloads(reference: dict[str, Any], resumed: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of ``(what, "identical" | "DIFFERENT: why")`` for two checkpoint payloads."""
    rows = [("final step", _same(reference["step"], resumed["step"]))]
    names = sorted(set(reference["components"]) | set(resumed["components"]))
    for name in names:
        a = reference["components"].get(name)
        b = resumed["components"].get(name)
        label = f"{name} ({_count_tensors(a)} tensors)" if name == "model" else name
        rows.append((label, _same(a, b)))
    rows.append(
        ("RNG states (python, numpy, torch, CUDA)", _same(reference["rng"], resumed["rng"]))
    )
    return rows


def verify(config: VerifyConfig) -> int:
    """Run the check; prints a table and returns 0 when everything is identical, else 1."""
    job = from_dict(RunConfig, load_file(config.job)) if config.job else default_job()
    job.trainer.record_order = True
    job.trainer.progress = False
    workdir = Path(config.workdir)
    runs = {name: workdir / name for name in ("reference", "killed")}
    jobs = {}
    for name, run_dir in runs.items():
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        jobs[name] = workdir / f"{name}.json"
        save_config(dataclasses.replace(job, run_dir=str(run_dir)), jobs[name])

    started = time.perf_counter()
    _run_to_end(jobs["reference"], config.timeout)
    total = Checkpointer(runs["reference"] / "checkpoints").steps()[-1]
    plan = _kill_plan(config, job, total)
    print(f"verify-resume: reference run finished at step {total}; killing the second run at:")
    for kind, step in plan:
        where = "during its checkpoint write" if kind == "write" else "after its optimizer step"
        print(f"  step {step:>5}  {where}")
    for kind, step in plan:
        _run_until_pause(jobs["killed"], runs["killed"] / ".paused", kind, step, config.timeout)
    _run_to_end(jobs["killed"], config.timeout)

    payloads = [Checkpointer(runs[name] / "checkpoints").read() for name in ("reference", "killed")]
    if payloads[0] is None or payloads[1] is None:
        raise Error(f"a run left no final checkpoint in {workdir}")
    rows = compare_payloads(payloads[0], payloads[1])
    rows.append(_compare_order(runs["reference"], runs["killed"]))
    width = max(len(what) for what, _ in rows)
    print(f"\n{'what':<{width}}  result")
    for what, result in rows:
        print(f"{what:<{width}}  {result}")
    failed = [what for what, result in rows if result != "identical"]
    seconds = time.perf_counter() - started
    if failed:
        print(
            f"\nverify-resume: FAILED after {len(plan)} kills: {', '.join(failed)} differ ({seconds:.0f}s)"
        )
        return 1
    print(f"\nverify-resume: bitwise identical after {len(plan)} SIGKILLs ({seconds:.0f}s)")
    return 0


def main(argv: list[str]) -> int:
    """``epochal verify-resume [JOB] [--flags]``."""
    return verify(tyro.cli(VerifyConfig, args=argv, prog="epochal verify-resume"))


# -- subprocesses ---------------------------------------------------------------------------


def _command(job: Path) -> list[str]:
    return [sys.executable, "-m", "epochal", "train", str(job)]


def _run_to_end(job: Path, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k != _PAUSE_ENV}
    result = subprocess.run(_command(job), env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise Error(
            f"training job {job} failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )


def _run_until_pause(job: Path, marker: Path, kind: str, step: int, timeout: float) -> None:
    """Start the job, wait until it pauses at (kind, step), then SIGKILL its whole process group."""
    marker.unlink(missing_ok=True)
    env = {**os.environ, _PAUSE_ENV: f"{kind}:{step}:{marker}"}
    proc = subprocess.Popen(
        _command(job),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes the loader workers too
    )
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise Error(
                    f"training job {job} exited ({proc.returncode}) before reaching {kind} "
                    f"step {step}:\n{stderr[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise Error(f"training job {job} did not reach {kind} step {step} in {timeout}s")
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        marker.unlink(missing_ok=True)


def _kill_plan(config: VerifyConfig, job: RunConfig, total: int) -> list[tuple[str, int]]:
    """(kind, step) pairs at distinct, increasing steps; 'write' ones at checkpoint steps."""
    rng = random.Random(config.seed)
    every = job.trainer.checkpoint_every
    writes = [s for s in range(every, total, every)] if every else []
    n_write = (config.kills + 1) // 2 if config.write_kills is None else config.write_kills
    if config.kills < 1 or not 0 <= n_write <= config.kills:
        raise Error(f"need kills >= 1 and 0 <= write_kills <= kills, got {config.kills}, {n_write}")
    if n_write > len(writes):
        raise Error(
            f"{n_write} kills during a checkpoint write need as many checkpoints before the last "
            f"step; the job checkpoints at {writes}"
        )
    chosen_writes = rng.sample(writes, n_write)
    others = [s for s in range(1, total) if s not in chosen_writes]
    if config.kills - n_write > len(others):
        raise Error(f"cannot kill {config.kills} times in a job of {total} steps")
    chosen_steps = rng.sample(others, config.kills - n_write)
    plan = [("write", s) for s in chosen_writes] + [("step", s) for s in chosen_steps]
    return sorted(plan, key=lambda item: item[1])


# -- comparison -----------------------------------------------------------------------------


def _compare_order(reference: Path, killed: Path) -> tuple[str, str]:
    files = sorted(p.name for p in reference.glob("order-rank*.jsonl"))
    a = "".join((reference / name).read_text() for name in files)
    b = "".join((killed / name).read_text() for name in files if (killed / name).exists())
    steps = len({json.loads(line)["step"] for line in a.splitlines()})
    label = f"data order ({steps} steps)"
    if a == b:
        return label, "identical"
    first = next(
        (i for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False)) if x != y),
        min(len(a.splitlines()), len(b.splitlines())),
    )
    return label, f"DIFFERENT: first difference at batch {first}"


def _same(a: Any, b: Any) -> str:
    why = _difference(a, b, "")
    return "identical" if why is None else f"DIFFERENT: {why}"


def _difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{path or 'value'} is a tensor in one run only"
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            return f"{path or 'tensor'} differs"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path or 'keys'}: keys differ ({sorted(map(str, set(a) ^ set(b)))})"
        for key in a:
            why = _difference(a[key], b[key], f"{path}.{key}" if path else str(key))
            if why:
                return why
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path or 'list'}: lengths {len(a)} and {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            why = _difference(x, y, f"{path}[{i}]")
            if why:
                return why
        return None
    return None if a == b or (a != a and b != b) else f"{path or 'value'}: {a!r} != {b!r}"


def _count_tensors(state: Any) -> int:
    return (
        sum(isinstance(v, torch.Tensor) for v in state.values()) if isinstance(state, dict) else 0
    )
