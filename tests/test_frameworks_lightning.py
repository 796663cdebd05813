"""Real Lightning Trainer runs (CPU, a linear model, seconds each) on epochal Loaders
returned from a LightningModule: multi-epoch fits with validation every N steps, SIGKILL
and resume with ckpt_path="last", and a 2-process DDP fit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="the Lightning tests need lightning (in the test extra)")

from _lightning_app import BATCH, N_TRAIN, N_VAL, fit, read_log

APP = Path(__file__).with_name("_lightning_app.py")
PER_EPOCH = N_TRAIN // BATCH  # 10 steps per epoch


def _steps(entries: list[dict]) -> dict[int, list[int]]:
    """The record indices of each training step (a rerun step keeps its last entry)."""
    return {e["step"]: e["indices"] for e in entries if e["kind"] == "train"}


def _app(tmp_path: Path, log: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(APP.parent)}
    return subprocess.run(
        [sys.executable, str(APP), str(tmp_path / log), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_fit_of_two_and_a_half_epochs_validates_on_every_record(tmp_path):
    """Issue 12 findings 1-3: no hang at the end of epoch 0, every epoch a full pass, and
    every validation (after a 2-batch sanity check) sees all N_VAL records."""
    log = tmp_path / "log.jsonl"
    fit(str(log), max_steps=25, val_every=4)
    entries = read_log(log)
    steps = _steps(entries)
    assert sorted(steps) == list(range(25))
    for epoch in range(2):
        seen = [i for s in range(epoch * PER_EPOCH, (epoch + 1) * PER_EPOCH) for i in steps[s]]
        assert sorted(seen) == list(range(N_TRAIN)), f"epoch {epoch} is not one full pass"
    assert steps[0] != steps[PER_EPOCH], "each epoch has its own order"
    sanity = [e for e in entries if e["kind"] == "sanity"]
    vals = [e for e in entries if e["kind"] == "val"]
    assert len(sanity) == 1 and len(sanity[0]["indices"]) == 2 * 5
    assert len(vals) >= 6
    for v in vals:
        assert sorted(v["indices"]) == list(range(N_VAL)), f"validation at step {v['step']}"


def test_sigkill_and_resume_from_last_checkpoint_is_exact(tmp_path):
    """Checkpoints every 3 steps; SIGKILL at step 14 (mid epoch 1, two steps after the
    checkpoint of step 12); the resumed run sees the same indices at every step."""
    ckpt = str(tmp_path / "ckpt")
    killed = _app(tmp_path, "run.jsonl", "--max-steps", "25", "--ckpt-dir", ckpt, "--kill-at", "14")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert max(_steps(read_log(tmp_path / "run.jsonl"))) == 13
    # the reference and the resume run in this process (a Lightning import per subprocess
    # is the slow part); the resume reads only the killed run's checkpoints
    fit(str(tmp_path / "ref.jsonl"), max_steps=25)
    fit(str(tmp_path / "run.jsonl"), max_steps=25, ckpt_dir=ckpt, resume=True)
    entries = read_log(tmp_path / "run.jsonl")
    resumed_steps = [e["step"] for e in entries if e["kind"] == "train"][14:]
    assert resumed_steps[0] == 12, "the resume starts after the checkpoint of step 12"
    assert _steps(entries) == _steps(read_log(tmp_path / "ref.jsonl"))


def test_ddp_fit_on_two_cpu_processes_gives_disjoint_ranks(tmp_path):
    run = _app(tmp_path, "ddp.jsonl", "--max-steps", "5", "--devices", "2", "--strategy", "ddp")
    assert run.returncode == 0, run.stderr[-3000:]
    entries = [e for e in read_log(tmp_path / "ddp.jsonl") if e["kind"] == "train"]
    assert {(e["rank"], e["world"]) for e in entries} == {(0, 2), (1, 2)}
    by_rank = {
        r: Counter(i for e in entries if e["rank"] == r for i in e["indices"]) for r in (0, 1)
    }
    assert sum(by_rank[0].values()) == sum(by_rank[1].values()) == 5 * BATCH
    assert not set(by_rank[0]) & set(by_rank[1]), "both ranks read the same records"
    assert all(c == 1 for r in (0, 1) for c in by_rank[r].values())
