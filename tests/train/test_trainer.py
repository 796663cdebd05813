"""Trainer: bitwise-exact resume after real SIGKILLs, accumulation, schedules, re-runs (P9, P11)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import epochal
from epochal.train.checkpoint import Checkpointer
from epochal.train.config import TrainerConfig
from epochal.train.trainer import Trainer, warmup_schedule
from epochal.train.verify_resume import (
    VerifyConfig,
    _kill_plan,
    compare_payloads,
    default_job,
    verify,
)


@pytest.mark.slow
def test_sigkill_at_several_steps_and_during_a_write_resumes_bitwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """P9: a run SIGKILLed mid-epoch (twice) and during a checkpoint write, resumed each time,
    ends with exactly the weights, optimizer state and data order of an uninterrupted run.

    The job shuffles, augments each record at random, uses dropout, two loader workers and a
    warm-up + cosine LR schedule, and keeps only the last checkpoint (keep_last=1). It saves
    asynchronously (the Trainer's default), so the write kill lands in the background thread
    while the loop trains on.
    """
    assert default_job().trainer.async_save
    config = VerifyConfig(workdir=str(tmp_path), kills=3, write_kills=1, seed=1)
    plan = _kill_plan(config, default_job(), 24)
    assert [kind for kind, _ in plan].count("write") == 1
    assert any(kind == "step" and step % 8 != 0 for kind, step in plan)  # mid-epoch (8 steps/epoch)
    status = verify(config)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "during its checkpoint write" in out and "after its optimizer step" in out
    reference = Checkpointer(tmp_path / "reference" / "checkpoints").read()
    resumed = Checkpointer(tmp_path / "killed" / "checkpoints").read()
    assert reference["step"] == resumed["step"] == 24
    weights_a, weights_b = reference["components"]["model"], resumed["components"]["model"]
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    order_a = (tmp_path / "reference" / "order-rank0.jsonl").read_text()
    assert order_a == (tmp_path / "killed" / "order-rank0.jsonl").read_text()
    assert len(order_a.splitlines()) == 24


def test_compare_payloads_reports_a_one_ulp_difference() -> None:
    weights = {"w": torch.ones(3)}
    payload = {
        "step": 3,
        "components": {"model": weights, "loader": {"epoch": 1}},
        "rng": [{"torch": torch.zeros(2)}],
    }
    changed = {
        "step": 3,
        "components": {
            "model": {"w": torch.nextafter(torch.ones(3), torch.full((3,), 2.0))},
            "loader": {"epoch": 1},
        },
        "rng": [{"torch": torch.zeros(2)}],
    }
    rows = dict(compare_payloads(payload, payload))
    assert set(rows.values()) == {"identical"}
    rows = dict(compare_payloads(payload, changed))
    assert rows["model (1 tensors)"].startswith("DIFFERENT")
    assert rows["loader"] == "identical"


def _data(n: int = 64) -> epochal.Source:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return epochal.from_arrays(x=x, y=y)


def _trainer(
    run_dir: Path,
    *,
    batch_size: int,
    grad_accum: int,
    max_steps: int | None = None,
    epochs: int = 1,
    amp: bool = False,
) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = epochal.Loader(_data(), batch_size=batch_size, shuffle=True, seed=3, with_index=True)
    config = TrainerConfig(
        epochs=epochs,
        max_steps=max_steps,
        grad_accum=grad_accum,
        grad_clip=None,
        checkpoint_every=0,
        progress=False,
        log_every=1,
        amp=amp,
    )
    return Trainer(
        model, optimizer, loader, run_dir=run_dir, config=config, input_key="x", target_key="y"
    )


def test_gradient_accumulation_equals_the_larger_batch(tmp_path: Path) -> None:
    """Two accumulated batches of 8 make the same update as one batch of 16 (up to float rounding)."""
    big = _trainer(tmp_path / "big", batch_size=16, grad_accum=1)
    small = _trainer(tmp_path / "small", batch_size=8, grad_accum=2)
    assert big.total_steps() == small.total_steps() == 4
    big.fit()
    small.fit()
    for a, b in zip(big.model.parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in small.model.parameters())  # P11: zeroed after the last step


def test_a_finished_run_run_again_resumes_and_does_not_train(tmp_path: Path) -> None:
    first = _trainer(tmp_path, batch_size=16, grad_accum=1, epochs=2)
    metrics = first.fit()
    assert metrics["step"] == 8
    assert Checkpointer(tmp_path / "checkpoints").steps() == [8]
    again = _trainer(tmp_path, batch_size=16, grad_accum=1, epochs=2)
    assert again.fit()["step"] == 8
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (tmp_path / "config.json").exists() and (tmp_path / "metrics.jsonl").exists()


def test_warmup_then_cosine_schedule() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_schedule(optimizer, warmup_steps=4, total_steps=12, schedule="cosine")
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(lrs[8], 0.5)  # half-way through the decay
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    with pytest.raises(ValueError, match="schedule must be"):
        warmup_schedule(optimizer, warmup_steps=0, total_steps=3, schedule="step")


def test_amp_on_cpu_trains_in_bfloat16_and_keeps_float32_weights(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, batch_size=16, grad_accum=1, epochs=3, amp=True)
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics = trainer.fit()
    assert math.isfinite(metrics["train_loss"])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True)
    )


def test_async_and_sync_checkpointing_write_the_same_checkpoints(tmp_path: Path) -> None:
    """The Trainer's background saves hold exactly what synchronous saves would have held."""
    payloads = {}
    for async_save in (False, True):
        trainer = _trainer(tmp_path / str(async_save), batch_size=8, grad_accum=1, epochs=2)
        trainer.config = dataclasses.replace(
            trainer.config, checkpoint_every=3, keep_last=None, async_save=async_save
        )
        trainer.checkpointer = Checkpointer(
            tmp_path / str(async_save) / "checkpoints", keep_last=None, async_save=async_save
        )
        trainer.fit()
        assert trainer.checkpointer._pending is None  # fit() returned with the last one durable
        steps = trainer.checkpointer.steps()
        payloads[async_save] = [trainer.checkpointer.read(step=s) for s in steps]
    assert [p["step"] for p in payloads[True]] == [3, 6, 9, 12, 15, 16]
    for sync, background in zip(payloads[False], payloads[True], strict=True):
        rows = compare_payloads(sync, background)
        assert {result for _, result in rows} == {"identical"}, rows
