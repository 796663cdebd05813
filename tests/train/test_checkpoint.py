"""Checkpointer: round trips, pruning, corruption handling, atomicity under SIGKILL (P9, P10)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _budget import examples
from epochal import StateError
from epochal.train import checkpoint as checkpoint_module
from epochal.train.checkpoint import (
    Checkpointer,
    CheckpointSaveError,
    CheckpointWarning,
    load_model_state,
)
from epochal.train.config import RunConfig, TrainerConfig, from_dict


class Counter:
    """A user component: anything with state_dict/load_state_dict."""

    def __init__(self) -> None:
        self.n = 0

    def state_dict(self) -> dict[str, int]:
        return {"n": self.n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.n = state["n"]


def _trained_parts(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, object, object]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return model, opt, sched, scaler


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_round_trip_restores_every_component_and_the_rngs(tmp_path: Path) -> None:
    """P8/P9: model, optimizer, scheduler, scaler, user state and RNG states come back exactly."""
    model, opt, sched, scaler = _trained_parts()
    counter = Counter()
    counter.n = 7
    ckpt = Checkpointer(tmp_path, keep_last=2)
    ckpt.save(3, model=model, optimizer=opt, scheduler=sched, scaler=scaler, counter=counter)
    expected = _draws()

    model2, opt2, sched2, scaler2 = _trained_parts(seed=1)
    counter2 = Counter()
    _draws()  # move the RNGs on: restore must put them back
    meta = ckpt.restore(
        model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler2, counter=counter2
    )

    assert meta is not None and meta["step"] == 3
    got = _draws()
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert str(opt.state_dict()) == str(opt2.state_dict())
    assert sched2.state_dict() == sched.state_dict()
    assert scaler2.state_dict() == scaler.state_dict()
    assert counter2.n == 7


def test_restore_without_checkpoints_returns_none(tmp_path: Path) -> None:
    assert Checkpointer(tmp_path / "nothing").restore(model=nn.Linear(2, 2)) is None


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
@settings(max_examples=examples(25), deadline=None)
@given(
    metrics=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=7),
    keep_last=st.integers(1, 3),
    mode=st.sampled_from(["min", "max"]),
)
def test_pruning_keeps_the_newest_and_the_best(
    tmp_path_factory: pytest.TempPathFactory,
    async_save: bool,
    metrics: list[float],
    keep_last: int,
    mode: str,
) -> None:
    """P9: keep_last newest checkpoints plus the best by the metric; nothing else on disk.

    With async_save, each save's pruning runs in the background and the next save waits for
    it; steps() waits for the last one.
    """
    directory = tmp_path_factory.mktemp("ckpt")
    ckpt = Checkpointer(
        directory, keep_last=keep_last, keep_best=("val", mode), async_save=async_save
    )
    counter = Counter()
    for step, value in enumerate(metrics, start=1):
        counter.n = step
        ckpt.save(step, metrics={"val": value}, counter=counter)
    steps = list(range(1, len(metrics) + 1))
    pick = min if mode == "min" else max
    best_value = pick(metrics)
    best = max(s for s, v in zip(steps, metrics, strict=True) if v == best_value)
    expected = sorted(set(steps[-keep_last:]) | {best})
    assert ckpt.steps() == expected
    assert ckpt.best_step == best
    assert len(list(directory.glob("*.pt"))) == len(expected)
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
    for step in expected:  # each kept checkpoint holds its own step's state
        assert ckpt.read(step=step)["components"]["counter"] == {"n": step}


def _three_checkpoints(tmp_path: Path) -> tuple[Checkpointer, nn.Module]:
    model = nn.Linear(3, 3)
    ckpt = Checkpointer(tmp_path, keep_last=None)
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(step)
        ckpt.save(step, model=model)
    return ckpt, model


def _payload(directory: Path, step: int) -> Path:
    (path,) = directory.glob(f"step_{step:012d}-*.pt")
    return path


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "commit"])
def test_restore_skips_a_damaged_newest_checkpoint_with_a_warning(
    tmp_path: Path, damage: str
) -> None:
    """P9: a corrupt or incomplete checkpoint is never loaded; the previous good one is."""
    ckpt, model = _three_checkpoints(tmp_path)
    path = _payload(tmp_path, 3)
    if damage == "flip":  # one flipped byte in the tensor data: torch.load alone would not notice
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "delete":
        path.unlink()
    else:
        (tmp_path / "step_000000000003.json").write_text("{not json")
    with pytest.warns(CheckpointWarning, match="step 3"):
        meta = ckpt.restore(model=model)
    assert meta is not None and meta["step"] == 2
    assert torch.all(model.weight == 2)


def test_restore_a_given_step_and_refuse_a_missing_or_damaged_one(tmp_path: Path) -> None:
    ckpt, model = _three_checkpoints(tmp_path)
    assert ckpt.restore(step=1, model=model)["step"] == 1
    assert torch.all(model.weight == 1)
    with pytest.raises(StateError, match="no checkpoint of step 9"):
        ckpt.restore(step=9, model=model)
    path = _payload(tmp_path, 2)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(StateError, match="step 2 is unusable"):
        ckpt.restore(step=2, model=model)


def test_an_orphan_payload_without_commit_record_is_ignored_and_pruned(tmp_path: Path) -> None:
    """A kill between the payload's rename and the commit record's leaves an orphan: not a checkpoint."""
    ckpt, model = _three_checkpoints(tmp_path)
    (tmp_path / "step_000000000003.json").unlink()
    assert ckpt.restore(model=model)["step"] == 2
    ckpt.save(4, model=model)
    assert not list(tmp_path.glob("step_000000000003*"))


def test_missing_component_and_component_without_state(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, model=nn.Linear(2, 2))
    with pytest.raises(StateError, match=r"no component\(s\) \['optimizer'\]"):
        ckpt.restore(model=nn.Linear(2, 2), optimizer=Counter())
    with pytest.raises(TypeError, match="has no state_dict"):
        ckpt.save(2, model=nn.Linear(2, 2), epoch=3)


def test_module_prefix_round_trip(tmp_path: Path) -> None:
    """P10: DataParallel/DDP-saved weights load into a bare model and bare ones into a wrapped model."""
    torch.manual_seed(0)
    bare = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    wrapped_state = nn.DataParallel(bare).state_dict()
    assert all(k.startswith("module.") for k in wrapped_state)

    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, model=nn.DataParallel(bare))
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    ckpt.restore(model=target)
    assert all(
        torch.equal(a, b)
        for a, b in zip(bare.state_dict().values(), target.state_dict().values(), strict=True)
    )

    ckpt.save(2, model=bare)
    target_wrapped = nn.DataParallel(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    ckpt.restore(model=target_wrapped)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            bare.state_dict().values(), target_wrapped.module.state_dict().values(), strict=True
        )
    )

    # a raw state dict with the prefix (saved by hand from DDP) into a bare model, and the reverse
    plain = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    load_model_state(plain, wrapped_state)
    assert torch.equal(plain[0].weight, bare[0].weight)
    other = nn.DataParallel(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    load_model_state(other, bare.state_dict())
    assert torch.equal(other.module[1].bias, bare[1].bias)


def test_config_round_trip_through_the_checkpoint(tmp_path: Path) -> None:
    """P12: the run's config is stored as plain data and rebuilds the same dataclass."""
    config = RunConfig(seed=7, trainer=TrainerConfig(max_steps=12, keep_best="val_loss:min"))
    ckpt = Checkpointer(tmp_path, config=config)
    ckpt.save(1, counter=Counter())
    meta = Checkpointer(tmp_path).restore(counter=Counter())
    assert from_dict(RunConfig, meta["config"]) == config


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from epochal.train.checkpoint import Checkpointer
    model = nn.Linear(64, 64)
    ckpt = Checkpointer(sys.argv[1], keep_last=1, async_save=sys.argv[2] == "async")
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(step)
        ckpt.save(step, model=model)
        with torch.no_grad():  # an async save must have taken its own copy already
            model.weight.fill_(-1)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "pause"),
    [("sync", "write"), ("async", "write"), ("async", "queued")],
    ids=["sync-write", "async-write", "async-queued"],
)
def test_sigkill_during_a_write_leaves_the_previous_checkpoint_loadable(
    tmp_path: Path, mode: str, pause: str
) -> None:
    """P9: SIGKILL while step 3 is saved (keep_last=1): step 2 is still there and loads.

    ``write`` pauses after step 3's temporary file is written and fsynced, before it replaces
    anything; with ``async_save`` that is in the background thread while the script runs on
    (here: to its end, where the interpreter waits for the write). ``queued`` pauses an
    async save after ``save()`` returned, before anything is written.
    """
    marker = tmp_path / "paused"
    env = {**os.environ, "EPOCHAL_PAUSE_AT": f"{pause}:3:{marker}"}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "ckpt"), mode], env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the writer exited before reaching the pause point"
            assert time.monotonic() < deadline, "the writer never reached the pause point"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    directory = tmp_path / "ckpt"
    debris = [p.name for p in directory.iterdir() if p.name.startswith(".tmp-")]
    assert bool(debris) == (pause == "write"), debris
    model = nn.Linear(64, 64)
    ckpt = Checkpointer(directory, keep_last=1)
    meta = ckpt.restore(model=model)
    assert meta is not None and meta["step"] == 2
    assert torch.all(model.weight == 2)
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]  # gone at start
    ckpt.save(3, model=model)
    assert ckpt.steps() == [3]
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]


def _commit_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:012d}.json"


def test_a_commit_record_pointing_outside_the_directory_is_refused(tmp_path: Path) -> None:
    """A commit record's "file" is untrusted: a path out of the directory, even to a sound
    checkpoint with the right size and checksum, is never loaded."""
    ckpt, model = _three_checkpoints(tmp_path / "ckpt")
    elsewhere = tmp_path / "elsewhere"
    Checkpointer(elsewhere).save(3, model=nn.Linear(3, 3))
    outside = json.loads(_commit_path(elsewhere, 3).read_text())
    for file in (f"../elsewhere/{outside['file']}", str(elsewhere / outside["file"])):
        _commit_path(tmp_path / "ckpt", 3).write_text(json.dumps({**outside, "file": file}))
        with pytest.warns(CheckpointWarning, match="is not the name of a step 3 checkpoint file"):
            meta = ckpt.restore(model=model)
        assert meta is not None and meta["step"] == 2 and torch.all(model.weight == 2)
        with pytest.raises(StateError, match="step 3 is unusable"):
            ckpt.restore(step=3, model=model)
    # a bare name of another step's file is refused too (it would restore the wrong step)
    step2 = json.loads(_commit_path(tmp_path / "ckpt", 2).read_text())
    _commit_path(tmp_path / "ckpt", 3).write_text(json.dumps({**step2, "step": 3}))
    with pytest.warns(CheckpointWarning, match="step 3"):
        assert ckpt.restore(model=model)["step"] == 2


@pytest.mark.parametrize(
    "record",
    [
        [1, 2, 3],
        "a string",
        {"format": "epochal.checkpoint"},
        {"format": "epochal.checkpoint", "file": 5},
        "bytes-as-text",
        "metrics-list",
        "metric-not-a-number",
    ],
)
def test_a_commit_record_of_the_wrong_shape_is_skipped_with_a_warning(
    tmp_path: Path, record: object
) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=None, keep_best=("val", "min"))
    model = nn.Linear(3, 3)
    for step in (1, 2, 3):
        ckpt.save(step, model=model, metrics={"val": float(step)})
    good = json.loads(_commit_path(tmp_path, 3).read_text())
    if record == "bytes-as-text":
        record = {**good, "bytes": str(good["bytes"])}
    elif record == "metrics-list":
        record = {**good, "metrics": [1.0]}
    elif record == "metric-not-a-number":
        record = {**good, "metrics": {"val": "low"}}
    _commit_path(tmp_path, 3).write_text(json.dumps(record))
    with pytest.warns(CheckpointWarning, match="step 3 .* not a valid commit record"):
        assert ckpt.restore(model=model)["step"] == 2
    assert ckpt.steps() == [1, 2, 3] and ckpt.best_step == 1
    ckpt.save(4, model=model, metrics={"val": 0.5})  # pruning copes with it too
    assert ckpt.best_step == 4


def test_leftovers_of_killed_saves_are_removed_when_a_run_starts(tmp_path: Path) -> None:
    """Temporary files and uncommitted payloads of killed saves go at the first restore (or
    save) of a new run, not only after its first successful save."""
    _, model = _three_checkpoints(tmp_path)
    debris = [tmp_path / ".tmp-abcdef12", tmp_path / ".tmp-0123abcd"]
    for path in debris:
        path.write_bytes(b"\0" * 1000)
    orphan = tmp_path / "step_000000000004-0badf00d.pt"
    orphan.write_bytes(b"half a payload")
    kept = sorted(p.name for p in tmp_path.glob("step_*.pt") if p != orphan)
    fresh = Checkpointer(tmp_path, keep_last=None)
    assert fresh.restore(model=model)["step"] == 3
    assert not any(p.exists() for p in [*debris, orphan])
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == kept
    for path in debris:  # and before the first save of a run that does not restore
        path.write_bytes(b"\0")
    Checkpointer(tmp_path, keep_last=None).save(5, model=model)
    assert not any(p.exists() for p in debris)


class _FullDisk:
    """A file whose disk fills up after ``room`` bytes (write raises ENOSPC, as the OS does)."""

    def __init__(self, f: Any, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data: Any) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("room", [0, 5000])
def test_a_full_disk_during_a_save_says_so(
    tmp_path: Path, monkeypatch: Any, room: int, async_save: bool
) -> None:
    ckpt, _ = _three_checkpoints(tmp_path)
    ckpt.async_save = async_save
    big = nn.Linear(64, 64)
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        checkpoint_module.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), room)
    )
    with pytest.raises(CheckpointSaveError, match=r"no space left for it .* is full") as err:
        ckpt.save(4, model=big)
        ckpt.wait()  # an asynchronous save reports its failure here
    assert "\n" not in str(err.value) and "unexpected pos" not in str(err.value)
    monkeypatch.undo()
    assert ckpt.steps() == [1, 2, 3] and not list(tmp_path.glob(".tmp-*"))


_LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    from torch import nn
    from epochal.train.checkpoint import Checkpointer, CheckpointSaveError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    try:
        Checkpointer(sys.argv[1]).save(1, model=nn.Linear(256, 256))
    except CheckpointSaveError as err:
        print(err)
    """
)


@pytest.mark.slow
def test_a_file_size_limit_hit_by_a_real_save_is_reported_in_one_line(tmp_path: Path) -> None:
    """The same path with a real OS error: RLIMIT_FSIZE makes the kernel refuse the write."""
    run = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "no space left for it (File too large" in run.stdout, run.stdout
    assert not list((tmp_path / "ckpt").iterdir())
