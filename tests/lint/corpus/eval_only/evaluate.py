"""Evaluation under no_grad: collecting loss tensors here keeps no graph."""
import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    losses = []
    for images, targets in loader:
        images = images.to(device)
        targets = targets.to(device)
        loss = F.cross_entropy(model(images), targets)
        losses.append(loss)
    return torch.stack(losses).mean().item()


def predict(model, loader):
    outputs = []
    with torch.inference_mode():
        for x in loader:
            logits = model(x)
            outputs.append(logits)
    return torch.cat(outputs)
