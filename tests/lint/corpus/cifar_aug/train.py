"""Train on the augmented CIFAR dataset with four loader workers."""
import numpy as np
import torch
import torch.nn.functional as F
from dataset import AugmentedCifar
from torch.utils.data import DataLoader
from torchvision.models import resnet18


def main():
    images = np.zeros((512, 3, 32, 32), dtype=np.float32)
    labels = np.zeros(512, dtype=np.int64)
    loader = DataLoader(AugmentedCifar(images, labels), batch_size=64, shuffle=True, num_workers=4)
    model = resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _epoch in range(30):
        for inputs, targets in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()


if __name__ == "__main__":
    main()
