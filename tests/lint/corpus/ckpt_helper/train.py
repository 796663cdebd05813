"""Training driver that checkpoints after every epoch."""
import torch
import torch.nn.functional as F
from utils import save_checkpoint


def validate(model, loader):
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct


def main(model, train_loader, val_loader, epochs):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    best = 0
    for epoch in range(epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        acc = validate(model, val_loader)
        save_checkpoint(
            {"epoch": epoch + 1, "state_dict": model.state_dict(), "best": best},
            acc > best,
        )
        best = max(best, acc)
