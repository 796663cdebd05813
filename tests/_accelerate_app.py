"""The README's Accelerate recipe as a script, run by test_frameworks_accelerate under
torchrun: model, optimizer and an epochal Loader prepared with epochal.accelerate.prepare
(nothing registered by hand), save_state every 3 steps into step_<n>, an optional SIGKILL,
and load_state of the newest checkpoint on --resume (the step count comes from its name,
as in Accelerate's own examples). Every step appends (rank, step, record indices) to a
JSONL log."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

import epochal
import epochal.accelerate

N, BATCH, EVERY = 30, 4, 3


def source():
    x = np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32)
    return epochal.from_arrays(x=x, y=(x[:, 0] > 0).astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("ckpt")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--kill-at", type=int, default=-1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    accelerator = Accelerator(cpu=True)
    loader = epochal.Loader(source(), BATCH, seed=5, with_index=True)  # shards by rank
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    # accelerator.prepare for the model and optimizer, and the loader's position goes
    # into save_state/load_state
    model, optimizer, loader = epochal.accelerate.prepare(accelerator, model, optimizer, loader)
    step = 0
    if args.resume:
        saved = sorted(Path(args.ckpt).glob("step_*"), key=lambda p: int(p.name[5:]))
        accelerator.load_state(str(saved[-1]))
        step = int(saved[-1].name[5:])

    for batch in loader.steps(args.steps - step):
        if step == args.kill_at and accelerator.is_main_process:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(args.log, "a") as f:
            f.write(
                json.dumps(
                    {
                        "rank": accelerator.process_index,
                        "step": step,
                        "indices": batch["_index"].tolist(),
                    }
                )
                + "\n"
            )
        loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % EVERY == 0:
            accelerator.save_state(os.path.join(args.ckpt, f"step_{step}"))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
