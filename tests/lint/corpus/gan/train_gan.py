"""DCGAN-style loop with two optimizers, each zeroed on its own module."""
import torch
from torch import nn


def train(netG, netD, loader, nz=64, epochs=5):
    criterion = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for _epoch in range(epochs):
        for real, _ in loader:
            netD.zero_grad()
            b = real.size(0)
            noise = torch.randn(b, nz, 1, 1)
            fake = netG(noise)
            errD = criterion(netD(real).view(-1), torch.ones(b)) + criterion(
                netD(fake.detach()).view(-1), torch.zeros(b)
            )
            errD.backward()
            optD.step()
            netG.zero_grad()
            errG = criterion(netD(fake).view(-1), torch.ones(b))
            errG.backward()
            optG.step()
