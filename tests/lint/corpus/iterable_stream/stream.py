"""A streaming dataset that shuffles each shard with numpy's global RNG."""
import argparse

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset


class ShardStream(IterableDataset):
    def __init__(self, shards):
        self.shards = shards

    def __iter__(self):
        order = list(self.shards)
        np.random.shuffle(order)
        for shard in order:
            yield torch.as_tensor(shard)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    stream = ShardStream([[1.0, 2.0], [3.0, 4.0]])
    for batch in DataLoader(stream, batch_size=None, num_workers=args.workers):
        print(batch)


if __name__ == "__main__":
    main()
