"""Training-harness costs: Trainer vs a hand-written loop, Checkpointer.save vs torch.save.

    PYTHONPATH=src python benchmarks/bench_train.py [--steps 60] [--repeats 5]

1. Trainer overhead: the same model, data, Loader, optimizer and number of steps, trained
   by ``Trainer.fit()`` (progress bar off; logging every 10 steps, the final checkpoint and
   config.json included) and by the bare loop people write by hand. Two models: the demo's
   small CNN (a realistic CPU step) and a tiny MLP (a step so short that any per-step
   overhead shows). Target: <= 3% of step time.
2. Checkpoint cost: ``Checkpointer.save`` (checksum, fsync of file and directory, commit
   record, pruning, RNG states) vs a bare ``torch.save`` of the same state (model +
   AdamW state), and vs ``torch.save`` + fsync. Target: <= 1.3x torch.save.

Times are CPU seconds of this one process (torch on 1 thread, no loader workers), runs of
the contenders are interleaved and the median of the repeats is reported, because the
machine may be shared; treat differences of a few percent as noise. Checkpoint times are
wall-clock (fsync waits for the disk).
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


def _clock() -> float:
    # CPU time of this process (all its threads): far less sensitive than wall time to other
    # jobs on a shared machine; everything here runs in-process (num_workers=0, 1 thread)
    return time.process_time()


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
    return model, optimizer, loader


def _hand_loop(
    make_model: Callable[[], nn.Module], source: epochal.Source, batch_size: int, steps: int
) -> float:
    model, optimizer, loader = _parts(make_model, source, batch_size)
    started = _clock()
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
    return _clock() - started


def _trainer(
    make_model: Callable[[], nn.Module], source: epochal.Source, batch_size: int, steps: int
) -> float:
    model, optimizer, loader = _parts(make_model, source, batch_size)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        config = TrainerConfig(
            max_steps=steps, checkpoint_every=0, progress=False, log_every=10, grad_clip=1.0
        )
        trainer = Trainer(model, optimizer, loader, run_dir=run_dir, config=config)
        started = _clock()
        trainer.fit()
        return _clock() - started
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def bench_overhead(steps: int, repeats: int) -> None:
    """Per-step cost from the slope between runs of ``steps`` and ``3 * steps`` steps, which
    cancels what a run pays once (opening the run directory and TensorBoard writer, the final
    checkpoint); that fixed cost is reported separately."""
    print(
        f"Trainer vs hand-written loop (runs of {steps} and {3 * steps} steps, median of {repeats}, interleaved)"
    )
    print(
        f"{'model':<10} {'hand ms/step':>13} {'Trainer ms/step':>16} {'per-step overhead':>18} {'fixed cost/run':>15}"
    )
    cases = {
        "small_cnn": (lambda: SmallCNN(num_classes=4), 64),
        "tiny_mlp": (lambda: MLP(num_classes=4, in_features=3 * 32 * 32, hidden=16), 16),
    }
    source = _data(4096)
    for name, (make_model, batch_size) in cases.items():
        _hand_loop(make_model, source, batch_size, 5)  # warm-up: allocator, kernels
        _trainer(make_model, source, batch_size, 5)  # warm-up: imports (tensorboard)
        runs: dict[tuple[str, int], list[float]] = {}
        for _ in range(repeats):
            for n in (steps, 3 * steps):
                runs.setdefault(("hand", n), []).append(
                    _hand_loop(make_model, source, batch_size, n)
                )
                runs.setdefault(("trainer", n), []).append(
                    _trainer(make_model, source, batch_size, n)
                )
        med = {key: statistics.median(values) for key, values in runs.items()}
        hand = (med[("hand", 3 * steps)] - med[("hand", steps)]) / (2 * steps)
        trainer = (med[("trainer", 3 * steps)] - med[("trainer", steps)]) / (2 * steps)
        fixed = (med[("trainer", steps)] - trainer * steps) - (med[("hand", steps)] - hand * steps)
        print(
            f"{name:<10} {hand * 1e3:>13.3f} {trainer * 1e3:>16.3f} {trainer / hand - 1:>+18.1%} "
            f"{fixed * 1e3:>12.0f} ms"
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
