"""SIGTERM / SIGINT to a real ``epochal demo`` process: it saves, says where a rerun resumes,
and the rerun does resume there; a rerun of a finished run says it is complete (P9)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from epochal.train.checkpoint import Checkpointer

# 512 images, batch 32: 16 steps per epoch, 64 in all; the demo checkpoints every 50
TINY = ["--num-train", "512", "--num-val", "64", "--epochs", "4", "--batch-size", "32"]


def _demo(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "epochal", "demo", "--run-dir", str(run_dir), *TINY, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_training(run_dir: Path, proc: subprocess.Popen[str]) -> None:
    """Until the run has logged its first scalars (step 10): the loop is running."""
    deadline = time.monotonic() + 240
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the demo never started training"
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_the_rerun_resumes_from_it(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    proc = _demo(tmp_path, "--no-progress")
    _wait_for_training(tmp_path, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    match = re.search(
        rf"epochal demo: stopped by {sig.name} at step (\d+) of 64; checkpoint of step \1 "
        rf"saved in (\S+); the same command again resumes from step \1",
        err,
    )
    assert match, err
    step = int(match.group(1))
    assert 10 <= step < 64
    assert Checkpointer(tmp_path / "checkpoints").steps()[-1] == step  # saved, not just said

    rerun = _demo(tmp_path, "--no-progress")
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert f"(step {step} of 64)" in err and "resumed from" in err
    assert "validation accuracy" in out


def test_rerun_of_a_finished_run_says_it_is_complete_and_how_to_start_over(
    tmp_path: Path,
) -> None:
    first = _demo(tmp_path, "--no-progress", "--epochs", "1")
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    again = _demo(tmp_path, "--no-progress", "--epochs", "1")
    _, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    assert "is already complete (step 16 of 16)" in err and "--fresh" in err
