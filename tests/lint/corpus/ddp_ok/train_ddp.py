"""DDP done carefully: set_epoch every epoch, rank 0 saves atomically."""
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def save_atomic(state, path):
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = TensorDataset(torch.randn(1024, 16), torch.randint(0, 2, (1024,)))
    sampler = DistributedSampler(data, shuffle=True, seed=17)
    loader = DataLoader(data, batch_size=32, sampler=sampler, num_workers=2)
    model = DistributedDataParallel(torch.nn.Linear(16, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for epoch in range(10):
        sampler.set_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        if rank == 0:
            save_atomic({"model": model.module.state_dict(), "epoch": epoch}, "checkpoint.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
