"""``epochal demo``: train a small CNN on procedurally drawn shapes, on the CPU, in about a minute.

Nothing is downloaded: the images (circles, squares, triangles and crosses at random
positions, sizes, rotations and colours) are drawn in-process. The run has progress,
checkpoints, TensorBoard logs (with the ``train`` extra) and resumes if run again; it
ends by printing the validation accuracy next to chance.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import tyro

from epochal.train.config import DataConfig, OptimConfig, RunConfig, TrainerConfig

__all__ = ["DemoConfig", "main", "run_config", "write_data"]


@dataclasses.dataclass(kw_only=True)
class DemoConfig:
    """Options of `epochal demo` (every run setting not here has a demo default)."""

    run_dir: str = "runs/demo"
    """Directory for checkpoints, logs and TensorBoard events; running again resumes from it."""
    epochs: int = 5
    """Epochs to train."""
    num_train: int = 4000
    """Training images."""
    num_val: int = 1000
    """Validation images."""
    batch_size: int = 64
    """Images per batch."""
    num_workers: int = 0
    """Loader worker processes (the result is the same for any value)."""
    seed: int = 0
    """Seed of the data order, augmentation, initialisation and dropout."""
    progress: bool = True
    """Show a progress bar."""


def write_data(demo: DemoConfig) -> dict[str, str]:
    """Draw the images and write them to two epochal stores under ``run_dir/data``.

    A store that is already there (a second run of the demo) is reused as it is.
    """
    import epochal
    from epochal.train.shapes import CLASSES, make_split

    paths = {}
    for split, n in (("train", demo.num_train), ("val", demo.num_val)):
        path = Path(demo.run_dir) / "data" / split
        paths[split] = str(path)
        try:
            if len(epochal.open(path)) == n:
                continue
        except epochal.StoreError:
            pass  # not written yet (or a build that died midway): write it
        arrays = make_split(split, n)
        records = (
            {"image": image, "label": label}
            for image, label in zip(arrays["image"], arrays["label"], strict=True)
        )
        epochal.write(records, path, metadata={"classes": list(CLASSES)}, overwrite=True)
    return paths


def run_config(demo: DemoConfig, data: dict[str, str]) -> RunConfig:
    """The full run configuration the demo trains with, on the stores ``data`` names."""
    return RunConfig(
        run_dir=demo.run_dir,
        seed=demo.seed,
        device="cpu",
        data=DataConfig(
            train=data["train"],
            val=data["val"],
            batch_size=demo.batch_size,
            num_workers=demo.num_workers,
            augment=True,
        ),
        optim=OptimConfig(name="adamw", lr=1e-2, warmup_steps=20, schedule="cosine"),
        trainer=TrainerConfig(
            epochs=demo.epochs,
            checkpoint_every=50,
            keep_last=2,
            log_every=10,
            progress=demo.progress,
        ),
    )


def main(argv: list[str]) -> int:
    """``epochal demo [--flags]``."""
    from epochal.train.run import run
    from epochal.train.shapes import CLASSES

    demo = tyro.cli(DemoConfig, args=argv, prog="epochal demo")
    started = time.perf_counter()
    config = run_config(demo, write_data(demo))
    print(
        f"epochal demo: {demo.num_train} training and {demo.num_val} validation images of "
        f"{len(CLASSES)} procedurally drawn shapes ({', '.join(CLASSES)}) in epochal stores "
        f"under {Path(demo.run_dir) / 'data'}"
    )
    metrics = run(config)
    seconds = time.perf_counter() - started
    accuracy = metrics.get("val_accuracy", float("nan"))
    chance = 1.0 / len(CLASSES)
    events = any(Path(demo.run_dir).glob("events.out.tfevents.*"))
    board = f"tensorboard --logdir {demo.run_dir}" if events else "metrics.jsonl (no tensorboard)"
    print(
        f"validation accuracy {accuracy:.1%} (chance {chance:.0%}) at step {int(metrics['step'])} "
        f"in {seconds:.0f}s; checkpoints in {Path(demo.run_dir) / 'checkpoints'}; logs: {board}"
    )
    return 0
