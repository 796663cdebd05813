"""Known and accepted: the findings here are silenced with noqa comments."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class Toy(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return torch.as_tensor(np.random.rand())  # epochal: noqa EPL001


def train(model, optimizer):
    losses = []
    for x in DataLoader(Toy(), num_workers=2):
        optimizer.zero_grad()
        loss = model(x).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss)  # epochal: noqa
    return losses
