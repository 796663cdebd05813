"""Training-harness costs: Trainer vs a hand-written loop, Checkpointer.save vs torch.save.

    PYTHONPATH=src python benchmarks/bench_train.py [--steps 60] [--repeats 5]

1. Trainer overhead: the same model, data, Loader, optimizer and number of steps, trained
   by ``Trainer.fit()`` (progress bar off, logging every 10 steps) and by the bare loop
   people write by hand. Two models: the demo's
   small CNN (a realistic CPU step) and a tiny MLP (a step so short that any per-step
   overhead shows). Target: <= 3% of step time.
2. Checkpoint cost: ``Checkpointer.save`` (checksum, fsync of file and directory, commit
   record, pruning, RNG states) vs a bare ``torch.save`` of the same state (model +
   AdamW state), and vs ``torch.save`` + fsync. Target: <= 1.3x torch.save.

A step is timed from one optimizer step to the next (an optimizer hook, identical for both),
torch runs on 1 thread without loader workers, runs are interleaved, and the median step is
reported with the mean (which includes the Trainer's logging every 10 steps), because the
machine may be shared: bursts of load hit single steps, not the median. Treat differences of
a few percent as noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import epochal
from epochal.train.checkpoint import Checkpointer
from epochal.train.config import TrainerConfig
from epochal.train.models import MLP, SmallCNN
from epochal.train.trainer import Trainer


def _data(n: int) -> epochal.Source:
    rng = np.random.default_rng(0)
    return epochal.from_arrays(
        image=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
        label=rng.integers(0, 4, n).astype(np.int64),
    )


def _parts(make_model: Callable[[], nn.Module], source: epochal.Source, batch_size: int) -> tuple:
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = epochal.Loader(source, batch_size=batch_size, seed=0, with_index=True)
    ticks: list[float] = []
    # the time between two optimizer steps is one whole step: fetch, forward, backward, the
    # loop's own work; the same hook times both contenders
    optimizer.register_step_post_hook(lambda *_: ticks.append(time.perf_counter()))
    return model, optimizer, loader, ticks


def _hand_loop(
    make_model: Callable[[], nn.Module], source: epochal.Source, batch_size: int, steps: int
) -> list[float]:
    model, optimizer, loader, ticks = _parts(make_model, source, batch_size)
    step = 0
    while step < steps:
        for batch in loader:
            loss = F.cross_entropy(model(batch["image"]), batch["label"])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == steps:
                break
    return list(np.diff(ticks))


def _trainer(
    make_model: Callable[[], nn.Module], source: epochal.Source, batch_size: int, steps: int
) -> list[float]:
    model, optimizer, loader, ticks = _parts(make_model, source, batch_size)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        config = TrainerConfig(
            max_steps=steps, checkpoint_every=0, progress=False, log_every=10, grad_clip=1.0
        )
        Trainer(model, optimizer, loader, run_dir=run_dir, config=config).fit()
        return list(np.diff(ticks))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def bench_overhead(steps: int, repeats: int) -> None:
    """Median and mean step time over all steps of all runs (interleaved, same hook)."""
    print(f"Trainer vs hand-written loop ({repeats} x {steps} steps each, interleaved)")
    print(
        f"{'model':<10} {'hand ms/step':>13} {'Trainer ms/step':>16} {'overhead (median)':>18} {'(mean)':>8}"
    )
    cases = {
        "small_cnn": (lambda: SmallCNN(num_classes=4), 64),
        "tiny_mlp": (lambda: MLP(num_classes=4, in_features=3 * 32 * 32, hidden=16), 16),
    }
    source = _data(4096)
    for name, (make_model, batch_size) in cases.items():
        _hand_loop(make_model, source, batch_size, 5)  # warm-up: allocator, kernels
        _trainer(make_model, source, batch_size, 5)  # warm-up: imports (tensorboard)
        hand: list[float] = []
        trainer: list[float] = []
        for _ in range(repeats):
            hand += _hand_loop(make_model, source, batch_size, steps)
            trainer += _trainer(make_model, source, batch_size, steps)
        h, t = statistics.median(hand), statistics.median(trainer)
        hm, tm = statistics.fmean(hand), statistics.fmean(trainer)
        print(
            f"{name:<10} {h * 1e3:>13.3f} {t * 1e3:>16.3f} {t / h - 1:>+18.1%} {tm / hm - 1:>+8.1%}"
        )


def bench_checkpoint(params: int, repeats: int) -> None:
    torch.manual_seed(0)
    width = int((params / 4) ** 0.5)
    model = nn.Sequential(*(nn.Linear(width, width) for _ in range(4)))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, width)).sum().backward()
    optimizer.step()
    n_params = sum(p.numel() for p in model.parameters())
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    directory = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=os.environ.get("BENCH_DIR")))
    ckpt = Checkpointer(directory / "ckpt", keep_last=1)
    fast = Checkpointer(directory / "fast", keep_last=1, durable=False)
    bare_path = directory / "bare.pt"

    def bare() -> None:
        torch.save(state, bare_path)

    def bare_fsync() -> None:
        with open(bare_path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    step = iter(range(1, 10**6))

    def checkpointer() -> None:
        ckpt.save(next(step), model=model, optimizer=optimizer)

    def checkpointer_fast() -> None:
        fast.save(next(step), model=model, optimizer=optimizer)

    contenders = {
        "torch.save": bare,
        "torch.save+fsync": bare_fsync,
        "Checkpointer.save": checkpointer,
        "  durable=False": checkpointer_fast,
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for fn in contenders.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in contenders.items():
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    size = n_params * 4 * 3 / 1e6  # weights + two AdamW moments
    print(
        f"\nCheckpoint save of {n_params / 1e6:.1f}M parameters + AdamW state (~{size:.0f} MB), median of {repeats}"
    )
    base = statistics.median(times["torch.save"])
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:<18} {m * 1e3:>9.1f} ms  {m / base:>5.2f}x torch.save")
    print(
        "(Checkpointer.save fsyncs the file, its commit record and the directory, and prunes the previous checkpoint)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per contender")
    parser.add_argument(
        "--params", type=int, default=10_000_000, help="model parameters to checkpoint"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_overhead(args.steps, args.repeats)
    bench_checkpoint(args.params, args.repeats)


if __name__ == "__main__":
    main()
