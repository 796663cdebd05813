"""Gradient accumulation: zero_grad only every `accum` steps, under the same if as step."""
import torch
import torch.nn.functional as F


def train(model, loader, accum=4, epochs=1):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
    optimizer.zero_grad(set_to_none=True)
    for _epoch in range(epochs):
        for step, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y) / accum
            loss.backward()
            if (step + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        scheduler.step()
