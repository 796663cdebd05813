"""ImageNet-style launcher that keeps the parser on the parsed args (and breaks spawn)."""
import argparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def main_worker(gpu, ngpus, args):
    dist.init_process_group("gloo", init_method=args.dist_url, world_size=ngpus, rank=gpu)
    data = TensorDataset(torch.randn(64, 4))
    sampler = DistributedSampler(data)
    loader = DataLoader(data, batch_size=8, sampler=sampler)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for (batch,) in loader:
            print(args.parser.prog, batch.shape)


def main():
    parser = argparse.ArgumentParser(description="toy launcher")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dist-url", default="tcp://127.0.0.1:23456")
    args = parser.parse_args()
    args.parser = parser
    ngpus = max(1, torch.cuda.device_count())
    mp.spawn(main_worker, nprocs=ngpus, args=(ngpus, args))


if __name__ == "__main__":
    main()
