"""Same augmented dataset, but every worker reseeds numpy."""
import numpy as np
import torch
import torch.nn.functional as F
from dataset import AugmentedCifar
from torch.utils.data import DataLoader
from torchvision.models import resnet18
from utils import seed_worker


def main():
    g = torch.Generator()
    g.manual_seed(0)
    data = AugmentedCifar(np.zeros((512, 3, 32, 32), np.float32), np.zeros(512, np.int64))
    loader = DataLoader(
        data, batch_size=64, shuffle=True, num_workers=4, worker_init_fn=seed_worker, generator=g
    )
    model = resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _epoch in range(30):
        for inputs, targets in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()


if __name__ == "__main__":
    main()
