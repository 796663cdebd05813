"""Typed, picklable configuration handed to spawned ranks."""
import argparse
import dataclasses

import torch.multiprocessing as mp


@dataclasses.dataclass(frozen=True)
class Config:
    lr: float = 0.1
    world_size: int = 2


def run(rank, cfg):
    print(rank, cfg)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--world-size", type=int, default=2)
    args = parser.parse_args()
    cfg = Config(**vars(args))
    mp.spawn(run, args=(cfg,), nprocs=cfg.world_size)


if __name__ == "__main__":
    main()
