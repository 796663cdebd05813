"""``epochal train CONFIG``: build a run from a :class:`RunConfig` and train it.

``run_dir.check_run_dir`` refuses a run directory the config cannot resume, before
anything is written; ``build`` turns the config into live objects (process group, seeded RNGs,
sources, Loaders, model, optimizer, schedule, Trainer); ``run`` trains; ``main`` is the
command. Multi-process: ``torchrun --nproc_per_node N -m epochal train CONFIG``.

SIGINT (Ctrl+C) and SIGTERM during training stop the run after the optimizer step in
progress, save a checkpoint of that step and say where a rerun resumes; a second signal
stops at once (the last checkpoint is named).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from epochal._errors import Error, RunInterrupted, UsageError
from epochal.train._signals import stop_on_signals, stopped_at_once
from epochal.train.config import RunConfig, parse
from epochal.train.distributed import DistInfo, barrier, init_distributed, wrap_model
from epochal.train.logging import setup_logging
from epochal.train.models import make_model
from epochal.train.run_dir import check_run_dir, clear_run_dir
from epochal.train.seeding import seed_everything
from epochal.train.trainer import Trainer, total_steps, warmup_schedule

__all__ = ["Job", "augment_image", "build", "main", "open_source", "run"]

log = logging.getLogger("epochal")

_MAX_SHIFT = 2  # pixels of random shift in augment_image
_LABEL_CHECK_LIMIT = 10_000_000  # labels of in-memory columns checked whole up to this many


@dataclasses.dataclass(kw_only=True)
class Job:
    """The live objects of a run, as :func:`build` makes them."""

    config: RunConfig
    dist: DistInfo
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    val_loader: Any
    trainer: Trainer


def open_source(spec: str) -> Any:
    """A Source from a config string: ``shapes:SPLIT[:N]``, an ``.npz`` file, or a store."""
    import epochal

    if spec.startswith("shapes:"):
        from epochal.train.shapes import SPLITS, make_split

        _, split, *count = spec.split(":")
        if split not in SPLITS or len(count) > 1 or (count and not count[0].isdigit()):
            raise Error(
                f"built-in data must be 'shapes:train[:N]' or 'shapes:val[:N]', got {spec!r}"
            )
        return epochal.from_arrays(**make_split(split, int(count[0]) if count else None))
    if spec.endswith(".npz"):
        if not Path(spec).is_file():
            raise Error(f"data file {spec!r} does not exist")
        with np.load(spec) as arrays:
            return epochal.from_arrays(**{k: arrays[k] for k in arrays.files})
    return epochal.open(spec)


def augment_image(record: dict[str, Any], rng: np.random.Generator, *, key: str) -> dict[str, Any]:
    """Random horizontal flip and shift (up to 2 pixels, edge-padded) of a (C, H, W) image."""
    image = np.asarray(record[key])
    if image.ndim != 3:
        raise Error(f"augment needs (C, H, W) images in column {key!r}, got shape {image.shape}")
    if rng.random() < 0.5:
        image = image[:, :, ::-1]
    dy, dx = rng.integers(-_MAX_SHIFT, _MAX_SHIFT + 1, size=2)
    padded = np.pad(
        image, ((0, 0), (_MAX_SHIFT, _MAX_SHIFT), (_MAX_SHIFT, _MAX_SHIFT)), mode="edge"
    )
    h, w = image.shape[1:]
    y0, x0 = _MAX_SHIFT + dy, _MAX_SHIFT + dx
    return {**record, key: np.ascontiguousarray(padded[:, y0 : y0 + h, x0 : x0 + w])}


def decode_input(
    record: dict[str, Any], rng: np.random.Generator, *, key: str, size: int
) -> dict[str, Any]:
    """Decode an encoded image column (JPEG/PNG bytes) to a float (3, size, size) in [0, 1]."""
    from epochal.images import decode_image

    image = decode_image(record[key], layout="CHW", size=size)
    return {**record, key: image.astype(np.float32) / np.float32(255)}


def _chain(record: Any, rng: np.random.Generator, *, steps: tuple[Any, ...]) -> Any:
    """Run transforms one after the other with the record's generator."""
    for step in steps:
        record = step(record, rng)
    return record


def _transforms(
    config: RunConfig, sample: dict[str, Any], *, train: bool
) -> tuple[Any, dict[str, Any]]:
    """The transform of a loader and what its first record looks like after it."""
    data = config.data
    steps: list[Any] = []
    if isinstance(sample.get(data.input_key), (bytes, bytearray, memoryview)):
        # image-folder stores keep images encoded: decode (and resize) in the workers
        steps.append(functools.partial(decode_input, key=data.input_key, size=data.image_size))
    if train and data.augment:
        steps.append(functools.partial(augment_image, key=data.input_key))
    shaped = sample
    for step in steps:
        shaped = step(shaped, np.random.default_rng(0))
    if not steps:
        return None, shaped
    return (steps[0] if len(steps) == 1 else functools.partial(_chain, steps=tuple(steps))), shaped


def _check_labels(source: Any, key: str, num_classes: int) -> None:
    """Refuse labels outside ``[0, num_classes)`` before training (a CUDA device assert or
    an IndexError deep in cross_entropy otherwise). In-memory columns are checked whole;
    other sources by their first records."""
    columns = getattr(source, "columns", None)
    if isinstance(columns, dict) and key in columns and len(source) <= _LABEL_CHECK_LIMIT:
        labels = np.asarray(columns[key])
    else:
        first = np.arange(min(len(source), 1024))
        get_columns = getattr(source, "get_columns", None)
        batch = get_columns(first) if get_columns is not None else None
        if batch is not None and key in batch:
            labels = np.asarray(batch[key])
        else:
            labels = np.asarray([source[int(i)][key] for i in first[:64]])
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise UsageError(
            f"column {key!r} has labels {low}..{high} but model.num_classes is {num_classes}; "
            f"set --model.num-classes {max(high + 1, 1)} (labels must be 0 .. num_classes - 1)"
        )


def build(config: RunConfig) -> Job:
    """Create every object of the run described by ``config`` (seeded, on its device)."""
    import epochal

    info = init_distributed(device=config.device)
    seed_everything(config.seed, deterministic=config.deterministic)
    data = config.data
    train_source = open_source(data.train)
    sample = train_source[0]
    for key in (data.input_key, data.target_key):
        if key not in sample:
            raise UsageError(
                f"the training records have no column {key!r}; they have {sorted(sample)} "
                f"(set --data.input-key / --data.target-key)"
            )
    if not np.issubdtype(np.asarray(sample[data.target_key]).dtype, np.floating):
        _check_labels(train_source, data.target_key, config.model.num_classes)
    transform, sample = _transforms(config, sample, train=True)
    pin = info.device.type == "cuda"
    train_loader = epochal.Loader(
        train_source,
        batch_size=data.batch_size,
        shuffle=data.shuffle,
        seed=config.seed,
        transform=transform,
        num_workers=data.num_workers,
        with_index=True,
        pin_memory=pin,
    )
    val_loader = None
    if data.val is not None:
        val_source = open_source(data.val)
        val_loader = epochal.Loader(
            val_source,
            batch_size=data.batch_size,
            shuffle=False,
            seed=config.seed,
            transform=_transforms(config, val_source[0], train=False)[0],
            num_workers=data.num_workers,
            with_index=True,
            pin_memory=pin,
        )
    model = make_model(
        config.model.name,
        num_classes=config.model.num_classes,
        dropout=config.model.dropout,
        input_shape=np.shape(sample[data.input_key]),
    )
    model = wrap_model(model, device=info.device, sync_batchnorm=config.sync_batchnorm)
    optimizer = _optimizer(config, model)
    scheduler = warmup_schedule(
        optimizer,
        warmup_steps=config.optim.warmup_steps,
        total_steps=total_steps(config.trainer, train_loader),
        schedule=config.optim.schedule,
    )
    trainer = Trainer(
        model,
        optimizer,
        train_loader,
        run_dir=config.run_dir,
        config=config.trainer,
        scheduler=scheduler,
        val_loader=val_loader,
        input_key=data.input_key,
        target_key=data.target_key,
        run_config=config,
    )
    return Job(
        config=config,
        dist=info,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        trainer=trainer,
    )


def run(config: RunConfig, *, clear_extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Build and train the run (resuming from ``config.run_dir``); returns the final metrics.

    Nothing is written before the run directory, the config and the data have been
    checked (:func:`check_run_dir`, the label range). With ``config.fresh``, what an earlier
    run left there (and the entries ``clear_extra`` names) is deleted first.

    Raises:
        RunInterrupted: SIGINT or SIGTERM stopped the run (see the module docstring).
    """
    check_run_dir(config)
    with stop_on_signals(config.run_dir) as watch:
        try:
            job = build(config)
            if config.fresh:
                if job.dist.rank == 0:
                    clear_run_dir(config.run_dir, extra=clear_extra)
                barrier()
            setup_logging(config.run_dir)  # after the process group: ranks > 0 log warnings only
            _say_if_complete(job)
            watch(job.trainer)
            try:
                return job.trainer.fit()
            except RunInterrupted:
                raise  # the trainer stopped after a step and saved it: its message says so
            except Exception as err:
                if job.trainer.stop_signal is None:
                    raise
                # the signal also reached the loader's workers (Ctrl+C in a terminal goes to
                # the whole process group) and the loop died fetching a batch from them
                name = signal.Signals(job.trainer.stop_signal).name
                raise RunInterrupted(
                    stopped_at_once(name, config.run_dir),
                    exit_code=128 + job.trainer.stop_signal,
                ) from err
        finally:
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


def _say_if_complete(job: Job) -> None:
    steps = job.trainer.checkpointer.steps()
    total = job.trainer.total_steps()
    if steps and steps[-1] >= total:
        log.info(
            "the run in %s is already complete (step %d of %d): evaluating its last checkpoint. "
            "To train it again from the start add --fresh; to train longer raise "
            "--trainer.epochs or --trainer.max-steps",
            job.config.run_dir,
            steps[-1],
            total,
        )


def main(argv: list[str]) -> int:
    """``epochal train [CONFIG] [--flags]``."""
    config = parse(
        RunConfig,
        argv,
        prog="epochal train [CONFIG]",
        description=(
            "Train a classifier with epochal's Trainer. CONFIG (a .json, .toml or .yaml file, "
            "anywhere on the line) gives the settings; flags override it. A run resumes from "
            "its --run-dir when that holds checkpoints of the same settings; --fresh starts "
            "over. Ctrl+C or SIGTERM saves a checkpoint and says where a rerun resumes. "
            "Multi-process: torchrun --nproc_per_node N -m epochal train CONFIG."
        ),
    )
    try:
        metrics = run(config)
    except RunInterrupted as stop:
        if _rank() != 0:  # rank 0 says it once
            return stop.exit_code
        raise
    _print_summary(config, metrics)
    return 0


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))  # the process group is gone by now: torchrun's env


def _print_summary(config: RunConfig, metrics: dict[str, float]) -> None:
    if _rank() != 0:
        return
    parts = [f"{k}={v:.4f}" for k, v in metrics.items() if k != "step"]
    print(f"trained to step {int(metrics['step'])}: {', '.join(parts)}; run dir: {config.run_dir}")


def _optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = config.optim
    if opt.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
