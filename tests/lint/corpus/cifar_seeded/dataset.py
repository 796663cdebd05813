"""CIFAR-style dataset with random flips and crops done with numpy."""
import numpy as np
import torch
from torch.utils.data import Dataset


class AugmentedCifar(Dataset):
    def __init__(self, images, labels, pad=4):
        self.images = images
        self.labels = labels
        self.pad = pad

    def __len__(self):
        return len(self.images)

    def _random_crop(self, image):
        padded = np.pad(image, ((0, 0), (self.pad, self.pad), (self.pad, self.pad)))
        top, left = np.random.randint(0, 2 * self.pad, size=2)
        return padded[:, top : top + 32, left : left + 32]

    def __getitem__(self, index):
        image = self._random_crop(self.images[index])
        if np.random.rand() < 0.5:
            image = image[:, :, ::-1]
        return torch.from_numpy(image.copy()), int(self.labels[index])
