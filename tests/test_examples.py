"""The examples run, and the custom loop resumes to the same result after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    args = [sys.executable, str(ROOT / "examples" / "custom_loop.py"), "--run-dir", str(run_dir)]
    return subprocess.Popen(
        [*args, "--epochs", "3", "--records", "2048", *extra], stdout=subprocess.PIPE, text=True
    )


def test_custom_loop_resumes_after_sigkill_to_the_same_result(tmp_path):
    """P9: kill -9 mid-run, run again, end where the uninterrupted run ends."""
    reference = _run(tmp_path / "reference")
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out
    killed = _run(tmp_path / "killed")
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("step_*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(tmp_path / "killed")
    again, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, again
    assert again.strip().splitlines()[-1] == out.strip().splitlines()[-1]
