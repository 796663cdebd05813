"""Random erasing with numpy, and a lambda worker_init_fn that reseeds numpy."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class Erasing(Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index].copy()
        y, x = np.random.randint(0, 24, size=2)
        image[:, y : y + 8, x : x + 8] = 0
        return torch.from_numpy(image)


def make_loader(images):
    return DataLoader(
        Erasing(images),
        batch_size=32,
        num_workers=4,
        worker_init_fn=lambda wid: np.random.seed(torch.initial_seed() % 2**32),
    )
