"""The Loader under a real torch.distributed process group (2 processes, gloo)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

import epochal


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        source = epochal.from_arrays(y=np.arange(101))
        loader = epochal.Loader(source, 5, seed=3, with_index=True, num_workers=1)
        assert (loader.rank, loader.world_size) == (rank, world_size)
        epochs = [[batch["_index"].tolist() for batch in loader] for _ in range(2)]
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"epochs": epochs, "state": loader.state_dict()}, f)
    finally:
        dist.destroy_process_group()


def test_rank_and_world_size_come_from_the_process_group(tmp_path, free_port: int):
    """P3/P10: each rank reads only its records, a new order each epoch, equal batch counts."""
    mp.spawn(_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["epochs"][0]) == len(ranks[1]["epochs"][0]) == 11  # ceil(101 / 10)
    for epoch in range(2):
        flat = [i for rank in ranks for batch in rank["epochs"][epoch] for i in batch]
        # 101 records over 2 ranks: the last global batch has 1 record, so 1 repeat
        assert sorted(set(flat)) == list(range(101)) and len(flat) == 102
        rank0 = {i for batch in ranks[0]["epochs"][epoch] for i in batch}
        rank1 = {i for batch in ranks[1]["epochs"][epoch][:-1] for i in batch}
        assert not rank0 & rank1, "the ranks read disjoint records (the last batch repeats one)"
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]
    assert ranks[0]["state"] == ranks[1]["state"]
