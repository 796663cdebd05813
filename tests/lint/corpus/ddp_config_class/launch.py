"""Launch one process per rank with the config object."""
import torch.multiprocessing as mp
from config import TrainConfig


def run(rank, cfg):
    print(rank, cfg.lr)


if __name__ == "__main__":
    cfg = TrainConfig()
    mp.spawn(run, args=(cfg,), nprocs=cfg.args.world_size)
