"""The README's Accelerate recipe as a script, run by test_frameworks_accelerate under
torchrun: an epochal Loader registered for checkpointing, save_state every 3 steps, an
optional SIGKILL, and load_state of the newest checkpoint on --resume. Every step appends
(rank, step, record indices) to a JSONL log."""

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

N, BATCH, EVERY = 30, 4, 3


def source():
    x = np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32)
    return epochal.from_arrays(x=x, y=(x[:, 0] > 0).astype(np.int64))


class Progress:
    """The step counter, checkpointed next to the loader."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


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
    model, optimizer = accelerator.prepare(model, optimizer)
    progress = Progress()
    # the one line that puts the loader's position into save_state/load_state
    accelerator.register_for_checkpointing(loader, progress)
    if args.resume:
        done = sorted(Path(args.ckpt).glob("step_*"), key=lambda p: int(p.name[5:]))
        accelerator.load_state(str(done[-1]))

    for batch in loader.steps(args.steps - progress.step):
        if progress.step == args.kill_at and accelerator.is_main_process:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(args.log, "a") as f:
            f.write(
                json.dumps(
                    {
                        "rank": accelerator.process_index,
                        "step": progress.step,
                        "indices": batch["_index"].tolist(),
                    }
                )
                + "\n"
            )
        loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        progress.step += 1
        if progress.step % EVERY == 0:
            accelerator.save_state(os.path.join(args.ckpt, f"step_{progress.step}"))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
