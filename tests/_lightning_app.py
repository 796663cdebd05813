"""A tiny Lightning app on epochal Loaders, run by the Lightning tests in-process or as a
subprocess (SIGKILL and DDP runs). Every training step appends the record indices it saw
to a JSONL log, every validation run the indices it saw."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import lightning as L
import numpy as np
import torch

import epochal

N_TRAIN, N_VAL, BATCH, VAL_BATCH = 40, 12, 4, 5


def sources():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN + N_VAL, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    train = epochal.from_arrays(x=x[:N_TRAIN], y=y[:N_TRAIN])
    val = epochal.from_arrays(x=x[N_TRAIN:], y=y[N_TRAIN:])
    return train, val


class App(L.LightningModule):
    """Loaders are built in __init__, before any process group exists (issue 12 finding 4)."""

    def __init__(self, log: str, kill_at: int = -1) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 2)
        self.log_path, self.kill_at = log, kill_at
        train, val = sources()
        self.train_loader = epochal.Loader(train, BATCH, seed=7, with_index=True)
        self.val_loader = epochal.Loader.eval(val, VAL_BATCH, with_index=True)
        self._val_seen: list[int] = []

    def _write(self, entry: dict) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def training_step(self, batch, batch_idx):
        if self.global_step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self._write(
            {
                "kind": "train",
                "step": self.global_step,
                "rank": self.global_rank,
                "world": self.trainer.world_size,
                "epoch": self.current_epoch,
                "indices": batch["_index"].tolist(),
            }
        )
        return torch.nn.functional.cross_entropy(self.net(batch["x"]), batch["y"])

    def on_validation_epoch_start(self) -> None:
        self._val_seen = []

    def validation_step(self, batch, batch_idx):
        self._val_seen += batch["_index"][~batch["_repeat"]].tolist()

    def on_validation_epoch_end(self) -> None:
        self._write(
            {
                "kind": "sanity" if self.trainer.sanity_checking else "val",
                "step": self.global_step,
                "rank": self.global_rank,
                "indices": self._val_seen,
            }
        )

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return self.val_loader


def fit(
    log: str,
    *,
    max_steps: int,
    ckpt_dir: str | None = None,
    every: int = 3,
    kill_at: int = -1,
    resume: bool = False,
    val_every: int | None = None,
    devices: int = 1,
    strategy: str = "auto",
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    callbacks = []
    if ckpt_dir is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir, every_n_train_steps=every, save_last=True, save_top_k=-1
            )
        )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=val_every,
        check_val_every_n_epoch=None if val_every else 1,
        limit_val_batches=None if val_every else 0,
        num_sanity_val_steps=2 if val_every else 0,
        callbacks=callbacks,
        enable_checkpointing=ckpt_dir is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    ckpt_path = "last" if resume else None
    trainer.fit(App(log, kill_at=kill_at), ckpt_path=ckpt_path)


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--ckpt-dir")
    parser.add_argument("--kill-at", type=int, default=-1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    args = parser.parse_args()
    fit(
        args.log,
        max_steps=args.max_steps,
        ckpt_dir=args.ckpt_dir,
        kill_at=args.kill_at,
        resume=args.resume,
        devices=args.devices,
        strategy=args.strategy,
    )
