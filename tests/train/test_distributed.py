"""Distributed helpers on a real 2-process gloo group (P10)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from epochal.train.distributed import MeanMetrics, get_rank, get_world_size, unwrap_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # 5 records over 2 ranks: rank 0 gets [0, 2, 4], rank 1 gets [1, 3, 4(repeat)]
        values = {0: torch.tensor([0.0, 2.0, 4.0]), 1: torch.tensor([1.0, 3.0, 4.0])}[rank]
        repeat = {0: torch.tensor([False, False, False]), 1: torch.tensor([False, False, True])}[
            rank
        ]
        metrics = MeanMetrics()
        metrics.update(repeat, loss=values, correct=(values > 1.5).float())
        result = metrics.compute()
        torch.save(
            {"rank": get_rank(), "world": get_world_size(), **result}, f"{out}/rank{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def test_eval_metrics_reduce_across_ranks_without_the_padded_repeats(tmp_path: Path) -> None:
    """P10: two ranks report the single-process mean over the 5 real records, not 6 or 2 numbers."""
    mp.spawn(_eval_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for rank, result in enumerate(results):
        assert result["rank"] == rank and result["world"] == 2
        assert result["loss"] == 2.0  # mean of 0..4; counting the repeat would give 14/6
        assert result["correct"] == 3 / 5


def test_mean_metrics_single_process_and_shape_checks() -> None:
    metrics = MeanMetrics()
    metrics.update(None, loss=torch.tensor([1.0, 3.0]))
    metrics.update(torch.tensor([False, True]), loss=torch.tensor([5.0, 100.0]))
    assert metrics.compute() == {"loss": 3.0}
    try:
        metrics.update(torch.tensor([False]), loss=torch.tensor([1.0, 2.0]))
    except ValueError as err:
        assert "has 2 values but the batch has 1 records" in str(err)
    else:
        raise AssertionError("a length mismatch was accepted")


def test_unwrap_model_removes_every_wrapper() -> None:
    bare = nn.Linear(2, 2)
    assert unwrap_model(nn.DataParallel(nn.DataParallel(bare))) is bare
    assert unwrap_model(bare) is bare
