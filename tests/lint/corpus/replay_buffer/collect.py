"""RL replay buffer: numpy sampling in a class that is not a Dataset."""
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


class ReplayBuffer:
    def __init__(self, capacity):
        self.capacity = capacity
        self.items = []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        j = np.random.randint(len(self.items))
        return self.items[j]


def offline_loader(states):
    return DataLoader(TensorDataset(torch.as_tensor(states)), batch_size=64, num_workers=4)
