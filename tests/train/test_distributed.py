"""Distributed helpers on a real 2-process gloo group (P10)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from epochal.train.checkpoint import Checkpointer
from epochal.train.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainerConfig,
    save_config,
)
from epochal.train.distributed import MeanMetrics, get_rank, get_world_size, unwrap_model


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


def test_eval_metrics_reduce_across_ranks_without_the_padded_repeats(
    tmp_path: Path, free_port: int
) -> None:
    """P10: two ranks report the single-process mean over the 5 real records, not 6 or 2 numbers."""
    mp.spawn(_eval_worker, args=(free_port, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for rank, result in enumerate(results):
        assert result["rank"] == rank and result["world"] == 2
        assert result["loss"] == 2.0  # mean of 0..4; counting the repeat would give 14/6
        assert result["correct"] == 3 / 5


def _restore_missing_step_worker(rank: int, port: int, directory: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = nn.Linear(2, 2)
        checkpointer = Checkpointer(directory, async_save=False)
        checkpointer.save(3, model=model)
        try:
            checkpointer.restore(step=7, model=model)
            message = "no error"
        except Exception as err:  # every rank must raise, none may wait for the others
            message = f"{type(err).__name__}: {err}"
        Path(out, f"rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


def test_restore_of_a_missing_step_raises_on_every_rank(tmp_path: Path, free_port: int) -> None:
    """Only rank 0 reads the commit records; its error must reach the other ranks, which
    would otherwise wait forever for the step to load."""
    mp.spawn(
        _restore_missing_step_worker,
        args=(free_port, str(tmp_path / "checkpoints"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    messages = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert messages[0] == messages[1]
    assert messages[0].startswith("StateError: no checkpoint of step 7")
    assert "saved steps: [3]" in messages[0]


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


# -- real torchrun jobs --------------------------------------------------------------------

_JOB = Path(__file__).with_name("ddp_job.py")


def _job_config(run_dir: Path, **trainer: object) -> RunConfig:
    return RunConfig(
        run_dir=str(run_dir),
        device="cpu",
        data=DataConfig(train="shapes:train:96", val="shapes:val:40", batch_size=8, augment=True),
        model=ModelConfig(name="mlp"),
        optim=OptimConfig(name="sgd", lr=0.05, warmup_steps=2),
        trainer=TrainerConfig(progress=False, record_order=True, log_every=2, **trainer),
    )


def _torchrun(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *args,
    ]
    return subprocess.Popen(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (torchrun starts its ranks in their own sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _wait(proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    _, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr.decode()[-3000:]


def test_two_process_ddp_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    """P10: a 2-process gloo job keeps both replicas identical and checkpoints once, from rank 0."""
    config = _job_config(tmp_path, max_steps=8, checkpoint_every=4, eval_every=4)
    save_config(config, tmp_path / "job.json")
    _wait(_torchrun([str(_JOB), str(tmp_path / "job.json")]))
    rank0, rank1 = (torch.load(tmp_path / f"final-rank{r}.pt") for r in range(2))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    final = Checkpointer(tmp_path / "checkpoints").read()
    assert final["world_size"] == 2 and final["step"] == 8
    assert all(torch.equal(final["components"]["model"][k], rank0[k]) for k in rank0)
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "order-rank1.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 9))  # rank 1 trained every step on its own slice


def test_two_process_run_killed_and_resumed_on_one_process_neither_repeats_nor_skips(
    tmp_path: Path,
) -> None:
    """P5/P10: 2 ranks x 8 records, SIGKILLed at step 7, resumed on 1 process x 16 records
    (same global batch): every record of every epoch is delivered exactly once."""
    config = _job_config(tmp_path, max_steps=20, checkpoint_every=5)
    save_config(config, tmp_path / "job.json")
    marker = tmp_path / "paused"
    proc = _torchrun(
        ["-m", "epochal", "train", str(tmp_path / "job.json")],
        env={"EPOCHAL_PAUSE_AT": f"step:7:{marker}"},
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the job never reached step 7"
            time.sleep(0.02)
    finally:
        _kill_tree(proc.pid)
        proc.communicate()
    assert Checkpointer(tmp_path / "checkpoints").steps() == [5]

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "epochal",
            "train",
            str(tmp_path / "job.json"),
            "--data.batch-size",
            "16",
        ],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    delivered: dict[int, list[int]] = {}
    for rank in (0, 1):
        for line in (tmp_path / f"order-rank{rank}.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert record["step"] <= 5 or rank == 0, "rank 1's steps after the checkpoint survived"
            real = [i for i, rep in zip(record["index"], record["repeat"], strict=True) if not rep]
            delivered.setdefault(record["epoch"], []).extend(real)
    # 20 steps x 16 records = 320 = 3 full epochs of 96 + 32 records of epoch 3
    assert sorted(delivered) == [0, 1, 2, 3]
    for epoch in (0, 1, 2):
        assert sorted(delivered[epoch]) == list(range(96)), f"epoch {epoch}"
    assert len(delivered[3]) == len(set(delivered[3])) == 32
    assert Checkpointer(tmp_path / "checkpoints").read()["world_size"] == 1
