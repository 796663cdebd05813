"""Training-harness costs: Trainer vs a hand-written loop, Checkpointer.save vs torch.save.

    PYTHONPATH=src python benchmarks/bench_train.py [--steps 40] [--pairs 11] [--repeats 7]

1. Trainer overhead: the same model, data, Loader, optimizer and number of steps, trained
   by ``Trainer.fit()`` (progress bar off, logging every 10 steps) and by the bare loop
   people write by hand. Two models: the demo's small CNN (a realistic CPU step) and a tiny
   MLP (a step so short that any per-step overhead shows). Target: <= 3% of step time.
2. Checkpoint cost: ``Checkpointer.save`` (checksum, fsync of file and directory, commit
   record, pruning, RNG states) vs a bare ``torch.save`` of the same state (model + AdamW
   state), vs ``torch.save`` + fsync, and with ``async_save=True``: the time ``save()``
   blocks the training loop (the snapshot into CPU memory) and the time until the
   checkpoint is durable (``save()`` + ``wait()``). Target: <= 1.3x torch.save.

The machine may be shared and noisy, so: a step is timed from one optimizer step to the
next (an optimizer hook, identical for both loops), torch runs on 1 thread without loader
workers, hand-written and Trainer runs are interleaved in pairs (alternating which goes
first) and the overhead is the median over pairs of the per-pair ratio, for the median
step (robust to bursts of load), the mean step (includes the Trainer's logging every 10
steps) and the CPU time per step (``time.process_time``, all threads of the process: less
sensitive to other processes than wall time). Treat differences of a few percent as noise.
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
    ticks: list[tuple[float, float]] = []
    # the time between two optimizer steps is one whole step: fetch, forward, backward, the
    # loop's own work; the same hook times both contenders, in wall and CPU time
    optimizer.register_step_post_hook(
        lambda *_: ticks.append((time.perf_counter(), time.process_time()))
    )
    return model, optimizer, loader, ticks


class _Run:
    """One run's step times: the median and mean wall step, and the mean CPU time per step."""

    def __init__(self, ticks: list[tuple[float, float]]) -> None:
        wall = np.diff([t for t, _ in ticks])
        self.median = float(np.median(wall))
        self.mean = float(wall.mean())
        self.cpu = (ticks[-1][1] - ticks[0][1]) / (len(ticks) - 1)


def _hand_loop(
    make_model: Callable[[], nn.Module], source: epochal.Source, batch_size: int, steps: int
) -> _Run:
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
    return _Run(ticks)


def _trainer(
    make_model: Callable[[], nn.Module], source: epochal.Source, batch_size: int, steps: int
) -> _Run:
    model, optimizer, loader, ticks = _parts(make_model, source, batch_size)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        config = TrainerConfig(
            max_steps=steps, checkpoint_every=0, progress=False, log_every=10, grad_clip=1.0
        )
        Trainer(model, optimizer, loader, run_dir=run_dir, config=config).fit()
        return _Run(ticks)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def bench_overhead(steps: int, pairs: int) -> None:
    """Per-pair Trainer/hand ratios of median step, mean step and CPU per step; their medians."""
    print(f"Trainer vs hand-written loop ({pairs} interleaved pairs x {steps} steps each)")
    print(
        f"{'model':<10} {'hand ms/step':>13} {'Trainer ms/step':>16} {'overhead: median step':>22}"
        f" {'mean step':>10} {'CPU/step':>9} {'CPU ms/step hand, Trainer':>26}"
    )
    cases = {
        "small_cnn": (lambda: SmallCNN(num_classes=4), 64),
        "tiny_mlp": (lambda: MLP(num_classes=4, in_features=3 * 32 * 32, hidden=16), 16),
    }
    source = _data(4096)
    for name, (make_model, batch_size) in cases.items():
        _hand_loop(make_model, source, batch_size, 5)  # warm-up: allocator, kernels
        _trainer(make_model, source, batch_size, 5)  # warm-up: imports (tensorboard)
        runs: list[tuple[_Run, _Run]] = []
        for i in range(pairs):
            if i % 2 == 0:  # alternate who goes first, so a drift in load hits both alike
                hand = _hand_loop(make_model, source, batch_size, steps)
                trainer = _trainer(make_model, source, batch_size, steps)
            else:
                trainer = _trainer(make_model, source, batch_size, steps)
                hand = _hand_loop(make_model, source, batch_size, steps)
            runs.append((hand, trainer))

        h = statistics.median(r[0].median for r in runs)
        t = statistics.median(r[1].median for r in runs)
        hc = statistics.median(r[0].cpu for r in runs)
        tc = statistics.median(r[1].cpu for r in runs)
        print(
            f"{name:<10} {h * 1e3:>13.3f} {t * 1e3:>16.3f} {_overhead(runs, 'median'):>+22.1%}"
            f" {_overhead(runs, 'mean'):>+10.1%} {_overhead(runs, 'cpu'):>+9.1%}"
            f" {f'{hc * 1e3:.3f}, {tc * 1e3:.3f}':>26}"
        )


def _overhead(runs: list[tuple[_Run, _Run]], attr: str) -> float:
    """Median over pairs of Trainer / hand-written, minus one, for one of _Run's measures."""
    return statistics.median(getattr(t, attr) / getattr(h, attr) for h, t in runs) - 1


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

    background = Checkpointer(directory / "async", keep_last=1, async_save=True)
    step = iter(range(1, 10**6))

    def checkpointer() -> None:
        ckpt.save(next(step), model=model, optimizer=optimizer)

    def checkpointer_fast() -> None:
        fast.save(next(step), model=model, optimizer=optimizer)

    def async_blocking() -> None:
        background.save(next(step), model=model, optimizer=optimizer)

    def async_durable() -> None:
        background.save(next(step), model=model, optimizer=optimizer)
        background.wait()

    contenders = {
        "torch.save": bare,
        "torch.save+fsync": bare_fsync,
        "Checkpointer.save": checkpointer,
        "  durable=False": checkpointer_fast,
        "async: save() blocks": async_blocking,
        "async: until durable": async_durable,
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for fn in contenders.values():
            fn()  # warm-up
            background.wait()
        for _ in range(repeats):
            for name, fn in contenders.items():
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
                background.wait()  # untimed for "blocks": the write must not overlap the next one
    finally:
        background.close()
        shutil.rmtree(directory, ignore_errors=True)
    size = n_params * 4 * 3 / 1e6  # weights + two AdamW moments
    print(
        f"\nCheckpoint save of {n_params / 1e6:.1f}M parameters + AdamW state (~{size:.0f} MB), "
        f"median of {repeats} interleaved rounds"
    )
    print(f"{'':<22} {'median':>9}    {'/ torch.save':>12} {'(median of per-round ratios)':>29}")
    base = statistics.median(times["torch.save"])
    for name, values in times.items():
        m = statistics.median(values)
        per_round = statistics.median(
            v / b for v, b in zip(values, times["torch.save"], strict=True)
        )
        print(f"{name:<22} {m * 1e3:>9.1f} ms {m / base:>11.2f}x {per_round:>28.2f}x")
    print(
        "(Checkpointer.save fsyncs the file, its commit record and the directory, and prunes the "
        "previous checkpoint; 'async: save() blocks' is what the training loop pays: the state "
        "copied into CPU memory and the RNG states; the write then runs in a background thread, "
        "which on a busy machine competes with training for the CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--pairs", type=int, default=11, help="hand/Trainer run pairs per model")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of checkpoint saves")
    parser.add_argument(
        "--params", type=int, default=10_000_000, help="model parameters to checkpoint"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_overhead(args.steps, args.pairs)
    bench_checkpoint(args.params, args.repeats)


if __name__ == "__main__":
    main()
