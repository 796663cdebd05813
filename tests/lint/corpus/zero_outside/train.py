"""Zeroes the gradients once per epoch, but steps once per batch."""
import torch.nn.functional as F


class Trainer:
    def __init__(self, model, optimizer, loader):
        self.model = model
        self.optimizer = optimizer
        self.loader = loader

    def train_epoch(self):
        self.model.train()
        self.optimizer.zero_grad()
        for inputs, labels in self.loader:
            loss = F.nll_loss(self.model(inputs), labels)
            loss.backward()
            self.optimizer.step()

    def fit(self, epochs):
        for _ in range(epochs):
            self.train_epoch()
