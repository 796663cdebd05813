"""Accelerate: epochal.accelerate.prepare registers the Loader, so save_state/load_state
restore its position exactly, under torchrun (2 CPU processes, gloo) after a SIGKILL and in
one process; nothing is registered by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate", reason="the Accelerate test needs accelerate (test extra)")

import epochal
import epochal.accelerate

APP = Path(__file__).with_name("_accelerate_app.py")
STEPS = 12


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(APP.parent), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(APP), *args]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_save_state_and_load_state_after_sigkill_resume_exactly(tmp_path):
    from _accelerate_app import BATCH, source

    log, ckpt = str(tmp_path / "log.jsonl"), str(tmp_path / "ckpt")
    killed = _torchrun(tmp_path, log, ckpt, "--steps", str(STEPS), "--kill-at", "8")
    assert killed.returncode != 0, "rank 0 was to be SIGKILLed at step 8"
    assert sorted(p.name for p in Path(ckpt).iterdir())[-1] == "step_6"
    resumed = _torchrun(tmp_path, log, ckpt, "--steps", str(STEPS), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    entries = [json.loads(line) for line in Path(log).read_text().splitlines()]
    for rank in (0, 1):
        mine = [e for e in entries if e["rank"] == rank]
        restart = next(j for j in range(1, len(mine)) if mine[j]["step"] <= mine[j - 1]["step"])
        assert mine[restart]["step"] == 6, "the resume starts after the checkpoint of step 6"
        steps = {e["step"]: e["indices"] for e in mine}  # a rerun step keeps its last entry
        assert sorted(steps) == list(range(STEPS))
        # the uninterrupted run's indices on this rank (the data does not depend on the model)
        loader = epochal.Loader(source(), BATCH, seed=5, rank=rank, world_size=2, with_index=True)
        assert [steps[s] for s in range(STEPS)] == [
            b["_index"].tolist() for b in loader.steps(STEPS)
        ]


def test_prepare_returns_objects_in_order_and_save_load_state_restores_the_position(tmp_path):
    import torch
    from accelerate import Accelerator

    from _accelerate_app import BATCH, source

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    loader = epochal.Loader(source(), BATCH, seed=5, with_index=True)
    prepared, same = epochal.accelerate.prepare(accelerator, model, loader)
    assert same is loader
    assert prepared in accelerator._models  # the model went through accelerator.prepare
    assert epochal.accelerate.prepare(accelerator, loader) is loader
    assert accelerator._custom_objects == [loader], "a second prepare registers it once"

    seen = [b["_index"].tolist() for b in loader.steps(3)]
    accelerator.save_state(str(tmp_path / "ckpt"))
    expected = [b["_index"].tolist() for b in loader.steps(5)]  # crosses into epoch 1
    loader.load_state_dict(epochal.Loader(source(), BATCH, seed=5).state_dict())  # the start
    accelerator.load_state(str(tmp_path / "ckpt"))
    assert [b["_index"].tolist() for b in loader.steps(5)] == expected
    assert expected[0] not in seen

    with pytest.raises(ValueError, match="device_placement has 1 flags for 2 objects"):
        epochal.accelerate.prepare(accelerator, model, loader, device_placement=[True])
