"""Debug run: numpy noise in the dataset, but everything loads in the main process."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class NoisySignal(Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, index):
        signal = np.sin(np.linspace(0, index, 128)) + np.random.normal(0, 0.05, 128)
        return torch.tensor(signal, dtype=torch.float32)


def main():
    loader = DataLoader(NoisySignal(), batch_size=10, num_workers=0)
    model = torch.nn.Linear(128, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for batch in loader:
        optimizer.zero_grad()
        loss = model(batch).pow(2).mean()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
