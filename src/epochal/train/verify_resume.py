"""``epochal verify-resume``: prove that a killed-and-resumed run ends bitwise identical.

The job (a run config, or a small built-in one with shuffling, augmentation, dropout, two
loader workers and an LR schedule) runs twice in subprocesses: once uninterrupted, and
once SIGKILLed at K random steps, restarted after each kill on the same run directory.
Some kills land after an optimizer step and some in the middle of a checkpoint write
(after the temporary file is written, before it replaces anything). The final
checkpoints of both runs are then compared bit for bit (model weights, optimizer state,
LR scheduler, loader position, RNG states) together with the data order of every step.
Every argument is checked before the first run starts, and each phase prints a line
(with an estimate of the time left once two phases have been timed).
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
from typing import Annotated, Any

import torch
import tyro

from epochal._errors import Error, UsageError
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

_DESCRIPTION = (
    "Prove that a killed-and-resumed run ends bitwise identical: the job runs once "
    "uninterrupted and once SIGKILLed at random steps (some in the middle of a checkpoint "
    "write) and resumed after each kill; then the final weights, optimizer, scheduler, "
    "loader position, RNG states and data order of both runs are compared."
)


@dataclasses.dataclass(kw_only=True)
class VerifyConfig:
    """Settings of `epochal verify-resume`."""

    job: Annotated[
        str | None, tyro.conf.Positional, tyro.conf.arg(metavar="[JOB]", help_behavior_hint="")
    ] = None
    """Run config file of the job to verify (.json/.toml/.yaml); default: a small built-in job."""
    workdir: str = "runs/verify-resume"
    """Directory for the two runs (its 'reference' and 'killed' subdirectories are replaced)."""
    kills: int = 3
    """How many times to SIGKILL the second run."""
    write_kills: Annotated[int | None, tyro.conf.arg(metavar="INT|None")] = None
    """How many of the kills land during a checkpoint write (default: half, rounded up)."""
    seed: int = 0
    """Seed for choosing the steps to kill at."""
    timeout: float = 600.0
    """Seconds each training subprocess may run before the verification gives up."""

    def __post_init__(self) -> None:
        if self.kills < 1:
            raise UsageError(f"--kills must be >= 1, got {self.kills}")
        if self.write_kills is not None and not 0 <= self.write_kills <= self.kills:
            raise UsageError(
                f"--write-kills must be between 0 and --kills ({self.kills}), got {self.write_kills}"
            )
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be > 0 seconds, got {self.timeout}")
        workdir = Path(self.workdir)
        if workdir.exists() and not workdir.is_dir():
            raise UsageError(f"--workdir {self.workdir!r} is a file; give a directory")


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


def load_job(config: VerifyConfig) -> RunConfig:
    """The job to verify (its file, or :func:`default_job`), checked; nothing is run."""
    job = from_dict(RunConfig, load_file(config.job)) if config.job else default_job()
    job.trainer.record_order = True
    job.trainer.progress = False
    if job.trainer.max_steps is not None:
        _kill_plan(config, job, job.trainer.max_steps)  # refuse an impossible plan up front
    return job


def verify(config: VerifyConfig, job: RunConfig | None = None) -> int:
    """Run the check; prints a table and returns 0 when everything is identical, else 1."""
    job = load_job(config) if job is None else job
    workdir = Path(config.workdir)
    runs = {name: workdir / name for name in ("reference", "killed")}
    jobs = {}
    for name, run_dir in runs.items():
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        jobs[name] = workdir / f"{name}.json"
        save_config(dataclasses.replace(job, run_dir=str(run_dir)), jobs[name])

    started = time.perf_counter()
    clock = _Phases(config.kills + 2)
    clock.start("reference run, uninterrupted")
    _run_to_end(jobs["reference"], config.timeout, "reference")
    total = Checkpointer(runs["reference"] / "checkpoints").steps()[-1]
    clock.done(total)
    plan = _kill_plan(config, job, total)
    print(f"verify-resume: reference run finished at step {total}; killing the second run at:")
    for kind, step in plan:
        where = "during its checkpoint write" if kind == "write" else "after its optimizer step"
        print(f"  step {step:>5}  {where}", flush=True)
    stops = [step for _, step in plan]
    segments = [b - a for a, b in zip([0, *stops], [*stops, total])]  # steps of each run
    previous = 0
    for i, (kind, step) in enumerate(plan):
        where = "in its checkpoint write" if kind == "write" else "after its optimizer step"
        clock.start(f"killed run: from step {previous}, SIGKILL at step {step} {where}")
        clock.estimate(segments[i + 1 :])
        _run_until_pause(jobs["killed"], runs["killed"] / ".paused", kind, step, config.timeout)
        clock.done(segments[i])
        previous = step
    clock.start(f"killed run: resume from step {previous} and run to the end")
    _run_to_end(jobs["killed"], config.timeout, "resumed")
    clock.done(total - previous)

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
    kills = f"{len(plan)} SIGKILL{'s' if len(plan) != 1 else ''}"
    if failed:
        print(f"\nverify-resume: FAILED after {kills}: {', '.join(failed)} differ ({seconds:.0f}s)")
        return 1
    print(f"\nverify-resume: bitwise identical after {kills} ({seconds:.0f}s)")
    return 0


def main(argv: list[str]) -> int:
    """``epochal verify-resume [JOB] [--flags]``."""
    from epochal.cli import parse_args

    config = parse_args(VerifyConfig, argv, prog="epochal verify-resume", description=_DESCRIPTION)
    return verify(config, load_job(config))


class _Phases:
    """One line per phase: what runs, then how long it took and about how long is left.

    The estimate models a phase as a fixed start-up cost plus a cost per training step,
    fitted to the phases timed so far (two are needed)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.index = 0
        self.timed: list[tuple[int, float]] = []  # (steps, seconds) of each finished phase
        self._started = 0.0
        self._left: list[int] = []

    def start(self, what: str) -> None:
        self.index += 1
        print(f"verify-resume: [{self.index}/{self.count}] {what} ...", flush=True)
        self._started = time.perf_counter()

    def estimate(self, steps_left: list[int]) -> None:
        """The steps of each phase after the one just started (for the time-left estimate)."""
        self._left = steps_left

    def done(self, steps: int) -> None:
        seconds = time.perf_counter() - self._started
        self.timed.append((steps, seconds))
        left = self._seconds_left()
        tail = f"; about {left:.0f}s left" if left is not None else ""
        print(
            f"verify-resume: [{self.index}/{self.count}] done in {seconds:.1f}s{tail}", flush=True
        )

    def _seconds_left(self) -> float | None:
        if len(self.timed) < 2 or self.index >= self.count:
            return None
        (s0, t0), (s1, t1) = self.timed[0], self.timed[-1]
        per_step = (t0 - t1) / (s0 - s1) if s0 != s1 else t0 / max(s0, 1)
        per_step = max(per_step, 0.0)
        startup = max(t1 - per_step * s1, 0.0)
        left = self._left if self._left else []
        return sum(startup + per_step * steps for steps in left)


# -- subprocesses ---------------------------------------------------------------------------


def _command(job: Path) -> list[str]:
    return [sys.executable, "-m", "epochal", "train", str(job)]


def _run_to_end(job: Path, timeout: float, what: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != _PAUSE_ENV}
    proc = subprocess.Popen(
        _command(job),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills its workers too
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise Error(
            f"the {what} training run ({job}) did not finish in {timeout:g}s; give it more "
            f"time with --timeout SECONDS"
        ) from None
    except BaseException:  # Ctrl+C: the job is in its own session, so stop it here
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        raise Error(f"the {what} training run ({job}) failed (exit {proc.returncode}): {last}")


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
                last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
                raise Error(
                    f"training job {job} exited ({proc.returncode}) before reaching {kind} "
                    f"step {step}: {last}"
                )
            if time.monotonic() > deadline:
                raise Error(
                    f"training job {job} did not reach {kind} step {step} in {timeout:g}s; give "
                    f"it more time with --timeout SECONDS"
                )
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
        raise UsageError(
            f"need kills >= 1 and 0 <= write_kills <= kills, got {config.kills}, {n_write}"
        )
    if n_write > len(writes):
        raise UsageError(
            f"{n_write} kills during a checkpoint write need as many checkpoints before the last "
            f"step; the job checkpoints at {writes}"
        )
    chosen_writes = rng.sample(writes, n_write)
    others = [s for s in range(1, total) if s not in chosen_writes]
    if config.kills - n_write > len(others):
        raise UsageError(f"cannot kill {config.kills} times in a job of {total} steps")
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
