"""A run directory is checked against the new config before anything is written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from epochal._errors import UsageError
from epochal.train.config import ModelConfig, RunConfig, TrainerConfig, save_config
from epochal.train.run_dir import RESUMABLE_CHANGES, check_run_dir, clear_run_dir


def _finished(run_dir: Path, config: RunConfig, step: int = 12) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    save_config(config, run_dir / "config.json")
    (run_dir / "checkpoints" / f"step_{step:012d}.json").write_text("{}\n")


def test_an_empty_or_missing_run_dir_has_nothing_to_resume(tmp_path: Path) -> None:
    assert check_run_dir(RunConfig(run_dir=str(tmp_path / "new"))) is None
    assert not (tmp_path / "new").exists()


def test_changes_that_keep_the_checkpoint_meaningful_are_allowed(tmp_path: Path) -> None:
    saved = RunConfig(run_dir=str(tmp_path))
    _finished(tmp_path, saved)
    longer = dataclasses.replace(
        saved,
        trainer=TrainerConfig(epochs=9, progress=False, log_every=3, keep_last=5),
        device="cpu",
    )
    assert check_run_dir(longer) == 12
    assert {"trainer.epochs", "trainer.progress", "data.num_workers"} <= RESUMABLE_CHANGES


def test_every_other_difference_is_named_with_both_values(tmp_path: Path) -> None:
    _finished(tmp_path, RunConfig(run_dir=str(tmp_path)))
    other = RunConfig(run_dir=str(tmp_path), seed=7, model=ModelConfig(num_classes=10))
    with pytest.raises(UsageError) as info:
        check_run_dir(other)
    message = str(info.value)
    assert "model.num_classes: 4 -> 10; seed: 0 -> 7" in message
    assert "--run-dir" in message and "--fresh" in message
    assert check_run_dir(dataclasses.replace(other, fresh=True)) is None  # --fresh: no check


def test_a_file_is_not_a_run_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_run_dir(RunConfig(run_dir=str(tmp_path / "f"), fresh=True))


def test_clear_run_dir_removes_the_runs_files_and_nothing_else(tmp_path: Path) -> None:
    _finished(tmp_path, RunConfig(run_dir=str(tmp_path)))
    for name in ("metrics.jsonl", "train.log", "order-rank0.jsonl", "events.out.tfevents.1.x"):
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    clear_run_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    clear_run_dir(tmp_path, extra=("data",))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
