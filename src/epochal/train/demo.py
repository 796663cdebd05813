"""``epochal demo``: train a small CNN on procedurally drawn shapes, on the CPU.

Nothing is downloaded: the images (circles, squares, triangles and crosses at random
positions, sizes, rotations and colours) are drawn in-process. The run has progress,
checkpoints, TensorBoard logs (with the ``train`` extra) and resumes if run again; it
ends by printing the validation accuracy next to chance. A run directory that holds
another run (other settings, other data sizes) is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from epochal._errors import UsageError
from epochal.train.config import DataConfig, OptimConfig, RunConfig, TrainerConfig

__all__ = ["DemoConfig", "data_paths", "main", "run_config", "write_data"]

_DESCRIPTION = (
    "Train a small CNN on procedurally drawn shapes (circles, squares, triangles, crosses) on "
    "the CPU: nothing is downloaded. Run it again on the same --run-dir to resume (a finished "
    "run is evaluated again); Ctrl+C or SIGTERM saves a checkpoint and says where a rerun "
    "resumes; --fresh starts over."
)


@dataclasses.dataclass(kw_only=True)
class DemoConfig:
    """Settings of `epochal demo` (every other run setting has a demo default)."""

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
    """Show progress bars (writing the data, training)."""
    fresh: bool = False
    """Start over: delete the run (checkpoints, logs, data) an earlier demo left in run_dir."""

    def __post_init__(self) -> None:
        for name in ("epochs", "num_train", "num_val", "batch_size"):
            value = getattr(self, name)
            if value < 1:
                flag = name.replace("_", "-")
                raise UsageError(f"--{flag} must be >= 1, got {value}")
        if self.num_workers < 0:
            raise UsageError(f"--num-workers must be >= 0, got {self.num_workers}")
        if not self.run_dir:
            raise UsageError("--run-dir must name a directory, got ''")


def data_paths(demo: DemoConfig) -> dict[str, str]:
    """Where the demo's two stores go: ``run_dir/data/train`` and ``run_dir/data/val``."""
    return {split: str(Path(demo.run_dir) / "data" / split) for split in ("train", "val")}


def _sizes(demo: DemoConfig) -> dict[str, int]:
    return {"train": demo.num_train, "val": demo.num_val}


def _stored_sizes(demo: DemoConfig) -> dict[str, int | None]:
    """Records in each store already in the run dir (None: absent or unfinished)."""
    import epochal

    sizes: dict[str, int | None] = {}
    for split, path in data_paths(demo).items():
        try:
            sizes[split] = len(epochal.open(path))
        except epochal.StoreError:
            sizes[split] = None  # not written yet (or a build that died midway)
    return sizes


def _check_data(demo: DemoConfig) -> None:
    """A run in run_dir was trained on stores of other sizes: refuse (they stay as they are)."""
    stored = _stored_sizes(demo)
    flags = {"train": "--num-train", "val": "--num-val"}
    changed = [
        f"{flags[split]} {n} (the run has {stored[split]})"
        for split, n in _sizes(demo).items()
        if stored[split] is not None and stored[split] != n
    ]
    if changed:
        raise UsageError(
            f"run dir {demo.run_dir!r} holds a demo trained on other data: {', '.join(changed)}. "
            f"Resume it with its own sizes, give another --run-dir, or add --fresh to delete "
            f"that run and start over"
        )


def write_data(demo: DemoConfig) -> dict[str, str]:
    """Draw the images and write them to two epochal stores under ``run_dir/data``.

    A store of the right size that is already there (a second run of the demo) is reused.
    """
    import epochal
    from epochal.train.shapes import CLASSES, make_split

    paths = data_paths(demo)
    stored = _stored_sizes(demo)
    for split, n in _sizes(demo).items():
        if stored[split] == n:
            continue
        arrays = make_split(split, n)
        records = (
            {"image": image, "label": label}
            for image, label in zip(arrays["image"], arrays["label"], strict=True)
        )
        epochal.write(
            records,
            paths[split],
            metadata={"classes": list(CLASSES)},
            overwrite=True,
            progress=demo.progress,
        )
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
    from epochal.cli import parse_args
    from epochal.train._signals import stop_on_signals
    from epochal.train.run import run
    from epochal.train.run_dir import check_run_dir, clear_run_dir
    from epochal.train.shapes import CLASSES

    demo = parse_args(DemoConfig, argv, prog="epochal demo", description=_DESCRIPTION)
    started = time.perf_counter()
    config = run_config(demo, data_paths(demo))
    # every check before the first write: a refused demo leaves the run dir as it was
    check_run_dir(dataclasses.replace(config, fresh=demo.fresh))
    if demo.fresh:
        clear_run_dir(demo.run_dir, extra=("data",))
    else:
        _check_data(demo)
    print(
        f"epochal demo: {demo.num_train} training and {demo.num_val} validation images of "
        f"{len(CLASSES)} procedurally drawn shapes ({', '.join(CLASSES)}) in epochal stores "
        f"under {Path(demo.run_dir) / 'data'}",
        flush=True,
    )
    with stop_on_signals(demo.run_dir):
        write_data(demo)
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
