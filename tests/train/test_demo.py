"""``epochal demo`` end to end: stores, training, accuracy far above chance, resume on re-run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import epochal


def _demo(run_dir: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "epochal",
            "demo",
            "--run-dir",
            str(run_dir),
            "--epochs",
            "3",
            "--num-train",
            "2000",
            "--num-val",
            "400",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def _accuracy(output: str) -> float:
    match = re.search(r"validation accuracy ([\d.]+)% \(chance 25%\) at step (\d+)", output)
    assert match, output
    return float(match.group(1)) / 100


def test_demo_trains_far_above_chance_and_resumes_when_run_again(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    accuracy = _accuracy(first)
    assert accuracy > 0.45, first  # 4 classes: chance is 0.25
    assert len(epochal.open(tmp_path / "data" / "train")) == 2000
    assert list(tmp_path.glob("checkpoints/step_*.json")) and (tmp_path / "config.json").exists()
    assert (tmp_path / "metrics.jsonl").read_text().count("train/loss") >= 9

    again = _demo(tmp_path)
    assert "resumed from" in again and "(step 96 of 96)" in again
    assert _accuracy(again) == accuracy  # nothing left to train: the same model, evaluated again
