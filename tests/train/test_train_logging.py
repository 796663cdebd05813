"""RunLogger: one writer per run directory, rank 0 only, clean curves after a resume (P11)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from epochal import Error
from epochal.train.logging import RunLogger, setup_logging


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scalars_hparams_and_the_resume_purge(tmp_path: Path) -> None:
    with RunLogger(tmp_path) as run:
        for step in range(1, 6):
            run.scalars(step, {"train/loss": 1.0 / step})
    with RunLogger(
        tmp_path, resume_step=3
    ) as run:  # steps 4 and 5 of the killed run never happened
        run.scalars(4, {"train/loss": 9.0})
        run.hparams(
            {"optim": {"lr": 0.1, "name": "sgd"}, "seed": 0, "extra": None}, {"val/accuracy": 0.9}
        )
    assert [r["step"] for r in _jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    assert _jsonl(tmp_path / "metrics.jsonl")[-1]["train/loss"] == 9.0
    saved = json.loads((tmp_path / "hparams.json").read_text())
    assert saved["hparams"] == {"optim.lr": 0.1, "optim.name": "sgd", "seed": 0, "extra": "None"}


def test_tensorboard_events_are_readable(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path) as run:
        assert run.tensorboard
        for step in range(1, 4):
            run.scalars(step, {"train/loss": float(step)})
    with RunLogger(tmp_path, resume_step=2) as run:
        run.scalars(3, {"train/loss": 30.0})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = {(e.step, e.value) for e in events.Scalars("train/loss")}
    assert scalars == {(1, 1.0), (2, 2.0), (3, 30.0)}


def test_a_second_writer_on_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    """P11: two TensorBoard writers on one directory corrupt it; the second one is an error."""
    with RunLogger(tmp_path, tensorboard=False), pytest.raises(Error, match="another writer"):
        RunLogger(tmp_path, tensorboard=False)
    RunLogger(tmp_path, tensorboard=False).close()  # released once the first one closed


def test_setup_logging_writes_the_run_log(tmp_path: Path) -> None:
    logger = setup_logging(tmp_path)
    logger.info("hello %d", 42)
    for handler in logger.handlers:
        handler.flush()
    assert "hello 42" in (tmp_path / "train.log").read_text()
    setup_logging(None)  # replaces, does not duplicate, its handlers
    assert sum(isinstance(h, logging.FileHandler) for h in logger.handlers) == 0


def test_without_tensorboard_the_run_says_so_once_and_keeps_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain install (no 'train' extra) still trains and logs: one line, then metrics.jsonl."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("epochal")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with RunLogger(tmp_path) as run:
            assert not run.tensorboard
            run.scalars(1, {"train/loss": 0.5})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert len(lines) == 1 and "pip install 'epochal[train]'" in lines[0]
    assert _jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "train/loss": 0.5}]
    assert not list(tmp_path.glob("events.out.tfevents.*"))
