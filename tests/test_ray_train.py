"""epochal.Loader inside Ray Train's TorchTrainer (2 CPU workers, gloo).

Each worker's Loader takes its rank and world size from the process group Ray Train
sets up; the ranks read disjoint records that together are the epoch; a run stopped
mid-epoch reports a Ray checkpoint holding the loader's state, and a new run restored
from it continues exactly where the first one stopped (together they are, batch for
batch, what each rank reads without a stop).
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest

ray = pytest.importorskip("ray")
train = pytest.importorskip("ray.train")
pytest.importorskip("ray.train.torch")
from ray.train import Checkpoint, RunConfig, ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

N, BATCH = 96, 4  # 12 batches per rank per epoch with 2 ranks


def _loop(config: dict) -> None:
    """The training function of every worker: iterate, record what it saw, checkpoint."""
    import torch.distributed as dist

    import epochal

    loader = epochal.Loader(
        epochal.from_arrays(x=np.arange(N)), batch_size=BATCH, shuffle=True, seed=3
    )
    # Ray Train 2 hands a restored run its checkpoint through the config (the trainer's
    # resume_from_checkpoint is deprecated); get_checkpoint() is for retries within a run
    checkpoint = train.get_checkpoint() or config["restore"]
    if checkpoint is not None:
        with checkpoint.as_directory() as folder, open(os.path.join(folder, "loader.json")) as f:
            loader.load_state_dict(json.load(f))
    seen = []
    for step, batch in enumerate(loader):
        seen.append(batch["x"].tolist())
        if step + 1 == config["stop_after"]:
            break
    rank = dist.get_rank()
    with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
        json.dump({"loader": [loader.rank, loader.world_size], "seen": seen}, f)
    with tempfile.TemporaryDirectory() as folder:
        if rank == 0:  # the state is global (samples consumed by all ranks): one copy suffices
            with open(os.path.join(folder, "loader.json"), "w") as f:
                json.dump(loader.state_dict(), f)
        train.report(
            {"steps": len(seen)},
            checkpoint=Checkpoint.from_directory(folder) if rank == 0 else None,
        )


def _fit(tmp_path, name: str, stop_after: int, checkpoint=None):
    out = tmp_path / name
    out.mkdir()
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"stop_after": stop_after, "out": str(out), "restore": checkpoint},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray_results"), name=name),
        torch_config=ray.train.torch.TorchConfig(backend="gloo"),
    )
    result = trainer.fit()
    seen = {}
    for rank in (0, 1):
        with open(out / f"rank{rank}.json") as f:
            seen[rank] = json.load(f)
    return result, seen


@pytest.fixture(scope="module")
def cluster():
    try:
        ray.init(
            num_cpus=2,
            object_store_memory=128 << 20,
            include_dashboard=False,
            log_to_driver=False,
            # the workers import this module (the training function pickles by reference)
            runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}},
        )
    except Exception as err:  # a machine too small or too busy for Ray's processes
        pytest.skip(f"Ray could not start here: {err}")
    try:
        yield
    finally:
        ray.shutdown()


def _uninterrupted(rank: int) -> list[list[int]]:
    """What rank ``rank`` of 2 reads in epoch 0 without a stop (computed here, no Ray)."""
    import epochal

    loader = epochal.Loader(
        epochal.from_arrays(x=np.arange(N)),
        batch_size=BATCH,
        shuffle=True,
        seed=3,
        rank=rank,
        world_size=2,
    )
    return [batch["x"].tolist() for batch in loader]


def test_loader_in_torch_trainer_is_sharded_and_resumes_exactly(cluster, tmp_path):
    first, part1 = _fit(tmp_path, "first", stop_after=5)
    assert first.checkpoint is not None
    _, part2 = _fit(tmp_path, "resumed", stop_after=-1, checkpoint=first.checkpoint)
    for rank in (0, 1):
        # rank and world size from the process group Ray Train made, in both runs
        assert part1[rank]["loader"] == part2[rank]["loader"] == [rank, 2]
        assert len(part1[rank]["seen"]) == 5
        assert part1[rank]["seen"] + part2[rank]["seen"] == _uninterrupted(rank)
    ranks = [{x for b in part1[r]["seen"] + part2[r]["seen"] for x in b} for r in (0, 1)]
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == set(range(N))
