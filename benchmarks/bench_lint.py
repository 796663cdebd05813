"""How fast ``epochal lint`` checks a large project tree (target: 10,000 files in < 1 minute).

Writes a tree of small, realistic training-code files (datasets, models, training
scripts, utilities; some with the bugs the rules look for) into a temporary directory,
then lints it with one process and with a process pool, and prints files/s, total time
and the ratio. Numbers are noisy on a shared machine: the median of ``--repeats`` runs is
reported.

Usage: python benchmarks/bench_lint.py [--files 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

from epochal.lint import lint_paths

DATASET = '''"""Dataset for {name}."""
import numpy as np
import torch
from torch.utils.data import Dataset


class {cls}(Dataset):
    def __init__(self, root, size={size}, train=True):
        self.root = root
        self.size = size
        self.train = train
        self.items = list(range(size))

    def __len__(self):
        return len(self.items)

    def _augment(self, image):
        if self.train and np.random.rand() < 0.5:
            image = image[:, ::-1]
        return image

    def __getitem__(self, index):
        image = np.zeros((3, 32, 32), dtype=np.float32) + index
        image = self._augment(image)
        label = index % {classes}
        return torch.from_numpy(image.copy()), label
'''

MODEL = '''"""Model {name}."""
import torch
from torch import nn


class {cls}(nn.Module):
    def __init__(self, classes={classes}):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.head(x)
'''

TRAIN = '''"""Train {name}."""
import argparse
import os

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def evaluate(model, loader, device):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader.dataset)


def train(model, dataset, args):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers={workers})
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    history = []
    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for step, (x, y) in enumerate(loader):
            x = x.to(device)
            y = y.to(device)
            {zero}
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item()
        history.append(running / len(loader))
        torch.save(model.state_dict(), os.path.join(args.out, "{name}_last.pt"))
    return history


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default={lr})
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args()
    print(args)


if __name__ == "__main__":
    main()
'''

UTIL = '''"""Utilities {name}."""
import json
import os
import random

import numpy as np
import torch


def seed_everything(seed={size}):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_json(obj, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


class AverageMeter:
    def __init__(self):
        self.sum = 0.0
        self.count = 0

    def update(self, value, n=1):
        self.sum += value * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(1, self.count)
'''

TEMPLATES = (DATASET, MODEL, TRAIN, UTIL)


def make_tree(root: str, n_files: int, seed: int = 0) -> None:
    """Write ``n_files`` Python files into ``root``, 50 per package directory."""
    rng = random.Random(seed)
    for i in range(n_files):
        package = os.path.join(root, f"project_{i // 200:03d}", f"pkg_{(i // 50) % 4}")
        os.makedirs(package, exist_ok=True)
        template = TEMPLATES[i % len(TEMPLATES)]
        text = template.format(
            name=f"exp{i}",
            cls=f"Thing{i}",
            size=rng.randint(100, 10_000),
            classes=rng.choice((10, 100, 1000)),
            workers=rng.choice((0, 2, 4, 8)),
            lr=rng.choice((0.1, 0.01, 0.001)),
            zero=rng.choice(("optimizer.zero_grad(set_to_none=True)", "pass")),
        )
        with open(os.path.join(package, f"module_{i}.py"), "w") as fh:
            fh.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="epochal-bench-lint-") as root:
        start = time.perf_counter()
        make_tree(root, options.files)
        print(f"wrote {options.files} files in {time.perf_counter() - start:.1f} s")
        rows = []
        for label, jobs in (("1 process", 1), (f"{os.cpu_count()} processes", None)):
            times = []
            for _ in range(options.repeats):
                start = time.perf_counter()
                report = lint_paths([root], jobs=jobs)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            rows.append((label, median, len(report.findings), report.files_checked))
        print(f"{'mode':<14} {'files':>6} {'findings':>8} {'median s':>9} {'files/s':>8}")
        for label, median, findings, files in rows:
            print(f"{label:<14} {files:>6} {findings:>8} {median:>9.2f} {files / median:>8.0f}")
        print(f"speed-up of the process pool: {rows[0][1] / rows[1][1]:.2f}x "
              f"(median of {options.repeats}; shared machine, expect noise)")  # fmt: skip


if __name__ == "__main__":
    main()
