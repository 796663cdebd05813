"""Checkpointer(async_save=True): snapshot isolation, bitwise equality, errors, wait/close."""

from __future__ import annotations

import copy
import io
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _budget import examples
from epochal.train import checkpoint
from epochal.train._async_save import snapshot
from epochal.train.checkpoint import Checkpointer, CheckpointSaveError, CheckpointWarning


class Box:
    """A user component holding one tensor and a plain value (both mutated in place)."""

    def __init__(self) -> None:
        self.values = torch.arange(6.0)
        self.n = 0

    def state_dict(self) -> dict:
        # a view and its base: the snapshot must keep them sharing one storage
        return {"values": self.values, "head": self.values[:3], "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.values = state["values"].clone()
        self.n = state["n"]


class Unpicklable:
    """A component whose state cannot be serialised: its background write fails."""

    def state_dict(self) -> dict:
        return {"fn": lambda: 0}

    def load_state_dict(self, state: dict) -> None:
        pass


def _parts(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, Box]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    _train_step(model, optimizer)
    return model, optimizer, Box()


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def _serialised(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds every background write at its ``queued`` pause point until the event is set."""
    release = threading.Event()
    real = checkpoint.pause_point

    def pause_point(kind: str, step: int) -> None:
        if kind == "queued":
            assert release.wait(30), "the test never released the writer"
        real(kind, step)

    monkeypatch.setattr(checkpoint, "pause_point", pause_point)
    yield release
    release.set()  # never leave a writer thread blocked behind a failed assertion


def test_save_returns_a_snapshot_that_later_mutation_cannot_change(
    tmp_path: Path, held: threading.Event
) -> None:
    """The model, optimizer, user state and RNGs are mutated right after save() returns,
    while the writer is held before writing anything: the checkpoint has the old values."""
    model, optimizer, box = _parts()
    box.n = 5
    before = copy.deepcopy(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "box": box.state_dict()}
    )
    ckpt = Checkpointer(tmp_path, async_save=True)
    path = ckpt.save(1, model=model, optimizer=optimizer, box=box)
    expected_draws = _draws()  # moves every RNG on, after save() has returned

    _train_step(model, optimizer)  # new weights, moments and optimizer step counts
    with torch.no_grad():
        box.values.mul_(-1)
    box.n = 99
    assert not list(tmp_path.glob("*.json")), "the write was not held: nothing proves isolation"
    held.set()
    ckpt.wait()
    assert path is not None and path.exists() and ckpt.steps() == [1]

    model2, optimizer2, box2 = _parts(seed=1)
    ckpt.restore(model=model2, optimizer=optimizer2, box=box2)
    got = _draws()
    assert got[:2] == expected_draws[:2] and torch.equal(got[2], expected_draws[2])
    after = {"model": model2.state_dict(), "optimizer": optimizer2.state_dict()}
    assert _serialised(after["model"]) == _serialised(before["model"])
    assert _serialised(after["optimizer"]) == _serialised(before["optimizer"])
    assert torch.equal(box2.values, torch.arange(6.0)) and box2.n == 5
    saved = ckpt.read()["components"]["box"]
    assert (
        saved["head"].untyped_storage().data_ptr() == saved["values"].untyped_storage().data_ptr()
    )


def test_an_async_checkpoint_is_bitwise_the_synchronous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same state, same instant: the .pt files of a sync and an async save are byte-identical."""
    monkeypatch.setattr(checkpoint.time, "time", lambda: 1234.5)
    model, optimizer, box = _parts()
    files = []
    for async_save in (False, True):
        ckpt = Checkpointer(tmp_path / str(async_save), async_save=async_save)
        random.seed(3)  # both saves capture the same RNG states
        path = ckpt.save(7, model=model, optimizer=optimizer, box=box, metrics={"val": 0.5})
        ckpt.close()
        files.append(path.read_bytes())
    assert files[0] == files[1]


_TENSORS = st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool, torch.float16])


@st.composite
def _states(draw: st.DrawFn) -> dict:
    """Nested state dicts with tensors of several dtypes, views sharing storage, and scalars."""
    state: dict = {}
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(_TENSORS)
        n = draw(st.integers(0, 12))
        base = torch.randint(0, 5, (n,)).to(dtype)
        entry: dict = {"base": base, "step": draw(st.integers(0, 10**6))}
        if n >= 4 and draw(st.booleans()):
            entry["view"] = base[1 : n - 1 : 2]
            entry["again"] = [base, (base.view(2, -1) if n % 2 == 0 else base[:1],)]
        state[f"part{i}"] = entry
    return state


@settings(max_examples=examples(30), deadline=None)
@given(state=_states())
def test_snapshot_serialises_exactly_like_the_original(state: dict) -> None:
    copied = snapshot(state)
    assert _serialised(copied) == _serialised(state)
    frozen = _serialised(copied)
    for entry in state.values():  # a deep copy: mutating the originals leaves it alone
        entry["base"].fill_(True if entry["base"].dtype == torch.bool else 7)
    assert _serialised(copied) == frozen


@pytest.mark.parametrize("surfaces_at", ["save", "wait", "close", "restore", "with"])
def test_a_failed_background_write_is_raised_once_naming_the_file(
    tmp_path: Path, surfaces_at: str
) -> None:
    model = nn.Linear(2, 2)
    ckpt = Checkpointer(tmp_path, async_save=True)
    ckpt.save(1, model=model)
    bad = ckpt.save(2, model=model, broken=Unpicklable())  # returns: the failure is in the thread
    assert bad is not None
    with pytest.raises(CheckpointSaveError, match=f"step 2 to {bad}") as info:
        if surfaces_at == "save":
            ckpt.save(3, model=model)
        elif surfaces_at == "restore":
            ckpt.restore(model=model)
        elif surfaces_at == "with":
            with ckpt:
                pass
        else:
            getattr(ckpt, surfaces_at)()
    assert info.value.path == bad and info.value.__cause__ is not None
    ckpt.wait()  # raised once: the error is not raised again
    assert ckpt.steps() == [1]  # the previous checkpoint is untouched; no debris of step 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert ckpt.restore(model=model)["step"] == 1
    ckpt.save(4, model=model)
    assert ckpt.steps() == [1, 4]


def test_an_exception_in_a_with_block_wins_over_a_failed_write(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, async_save=True)
    with (
        pytest.raises(KeyError, match="the block's own"),
        pytest.warns(CheckpointWarning, match="step 1"),
        ckpt,
    ):
        ckpt.save(1, broken=Unpicklable())
        raise KeyError("the block's own")


def _blocked(target: object) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(0.3)
    return thread


def test_wait_save_and_restore_block_until_the_write_in_flight_is_done(
    tmp_path: Path, held: threading.Event
) -> None:
    """At most one save in flight: wait(), the next save() and restore() all wait for it."""
    model = nn.Linear(3, 3)
    ckpt = Checkpointer(tmp_path, keep_last=None, async_save=True)
    ckpt.save(1, model=model)
    waiter = _blocked(ckpt.wait)
    assert waiter.is_alive(), "wait() returned while the write was held"
    assert not list(tmp_path.glob("*.json"))
    held.set()
    waiter.join(30)
    assert not waiter.is_alive() and [p.name for p in tmp_path.glob("*.json")] == [
        "step_000000000001.json"
    ]
    held.clear()
    ckpt.save(2, model=model)
    saver = _blocked(lambda: ckpt.save(3, model=model))
    assert saver.is_alive(), "a second save() started while one was in flight"
    assert sum(t.name.startswith("epochal-checkpoint-") for t in threading.enumerate()) == 1
    held.set()
    saver.join(30)
    assert ckpt.restore(model=model)["step"] == 3 and ckpt.steps() == [1, 2, 3]


def test_close_and_the_context_manager_make_the_last_save_durable(tmp_path: Path) -> None:
    model = nn.Linear(3, 3)
    with Checkpointer(tmp_path / "a", async_save=True) as ckpt:
        ckpt.save(1, model=model)
    assert ckpt._pending is None and (tmp_path / "a" / "step_000000000001.json").exists()
    other = Checkpointer(tmp_path / "b", async_save=True)
    other.save(1, model=model)
    other.close()
    assert other._pending is None and (tmp_path / "b" / "step_000000000001.json").exists()
    other.save(2, model=model)  # still usable after close()
    assert other.steps() == [1, 2]


_EXITS = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from epochal.train.checkpoint import Checkpointer

    class Broken:
        def state_dict(self):
            return {"fn": lambda: 0}

    ckpt = Checkpointer(sys.argv[1], async_save=True)
    ckpt.save(1, model=nn.Linear(256, 256))
    if sys.argv[2] == "fail":
        ckpt.save(2, broken=Broken())
    # no wait(), no close(): the interpreter exits with the write in flight
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_at_exit_the_write_in_flight_finishes_and_a_failure_is_reported(
    tmp_path: Path, outcome: str
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _EXITS, str(tmp_path), outcome],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 120
    ckpt = Checkpointer(tmp_path)
    assert ckpt.steps() == [1]
    if outcome == "ok":
        assert result.returncode == 0 and "Error" not in result.stderr, result.stderr
    else:
        assert "CheckpointSaveError" in result.stderr and "step 2" in result.stderr, result.stderr
