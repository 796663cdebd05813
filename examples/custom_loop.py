"""Your own training loop with epochal's Loader and Checkpointer (no Trainer).

Run it, interrupt it (Ctrl+C or kill -9) and run it again: it resumes from the newest
checkpoint, mid-epoch, with the same data order, augmentations and dropout as a run that
was never interrupted.

    python examples/custom_loop.py --run-dir runs/custom --epochs 3
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import tyro
from torch import nn

import epochal


@dataclasses.dataclass(kw_only=True)
class Config:
    """A run's settings: plain typed data, picklable and stored in every checkpoint (P12)."""

    run_dir: Path = Path("runs/custom")
    """Checkpoints go to RUN_DIR/checkpoints; running again resumes from there."""
    epochs: int = 3
    """Epochs to train."""
    records: int = 4096
    """Synthetic records to generate."""
    batch_size: int = 128
    """Samples per batch."""
    lr: float = 0.05
    """SGD learning rate."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many steps."""
    seed: int = 0
    """Seed of the data order, the augmentations, the initialisation and dropout."""


def jitter(record: dict, rng: np.random.Generator) -> dict:
    """Augmentation from the record's own generator: the same for any num_workers."""
    return {
        "x": record["x"] + rng.normal(0, 0.1, record["x"].shape).astype(np.float32),
        "y": record["y"],
    }


def main(cfg: Config) -> float:
    epochal.seed_everything(cfg.seed)
    data = np.random.default_rng(123)
    x = data.normal(size=(cfg.records, 16)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)
    loader = epochal.Loader(
        epochal.from_arrays(x=x, y=y), cfg.batch_size, seed=cfg.seed, transform=jitter
    )
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    ckpt = epochal.Checkpointer(cfg.run_dir / "checkpoints", keep_last=2, config=cfg)

    meta = ckpt.restore(model=model, optimizer=optimizer, loader=loader)
    step = 0 if meta is None else meta["step"]
    if meta is not None:
        print(f"resumed from step {step} (epoch {loader.epoch + 1})", file=sys.stderr)
    loss = torch.tensor(float("nan"))
    total = cfg.epochs * loader.batches_per_epoch  # steps of the whole run
    started, first = time.perf_counter(), step
    while loader.epoch < cfg.epochs:
        epoch = loader.epoch
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            loss.backward()
            optimizer.step()
            step += 1
            if step % cfg.checkpoint_every == 0:
                ckpt.save(
                    step,
                    model=model,
                    optimizer=optimizer,
                    loader=loader,
                    metrics={"loss": loss.item()},
                )
        # one progress line per epoch, with the time left at this run's own pace
        per_step = (time.perf_counter() - started) / max(step - first, 1)
        print(
            f"epoch {epoch + 1}/{cfg.epochs}: step {step} of {total}, loss {loss.item():.4f}, "
            f"about {per_step * (total - step):.0f}s left",
            file=sys.stderr,
            flush=True,
        )
    ckpt.save(step, model=model, optimizer=optimizer, loader=loader, metrics={"loss": loss.item()})
    print(f"finished {cfg.epochs} epochs at step {step}: loss {loss.item():.4f}")
    return loss.item()


if __name__ == "__main__":
    main(tyro.cli(Config))
