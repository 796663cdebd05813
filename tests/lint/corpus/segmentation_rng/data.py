"""Segmentation data: the dataset keeps its own numpy Generator for jitter."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class JitteredMasks(Dataset):
    def __init__(self, n, seed=0):
        self.n = n
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        image = np.full((3, 64, 64), index, dtype=np.float32)
        image += self.rng.normal(0.0, 0.1, size=image.shape).astype(np.float32)
        mask = (image[0] > index).astype(np.int64)
        return torch.from_numpy(image), torch.from_numpy(mask)


def make_loader(n, batch_size):
    return DataLoader(JitteredMasks(n), batch_size=batch_size, shuffle=True, num_workers=8)
