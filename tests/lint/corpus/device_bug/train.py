"""Moves the model but forgets that tensors are not moved in place."""
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def train(model, loader, device, epochs=2):
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for images, labels in loader:
            images.to(device)
            labels.to(device)
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()


def main():
    data = TensorDataset(torch.randn(64, 10), torch.randint(0, 3, (64,)))
    model = torch.nn.Linear(10, 3)
    criterion = torch.nn.CrossEntropyLoss()
    criterion.to("cpu")
    train(model, DataLoader(data, batch_size=8), torch.device("cpu"))


if __name__ == "__main__":
    main()
