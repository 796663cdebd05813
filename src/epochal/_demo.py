"""``epochal demo`` (until the training harness lands): the data path on embedded data.

Builds a synthetic image dataset in memory, reads two shuffled epochs with a random
augmentation on 2 workers, checkpoints the loader mid-epoch, resumes a fresh loader from
that state and checks that the resumed stream is bitwise the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import numpy as np
import tyro

__all__ = ["DemoConfig", "main"]


@dataclasses.dataclass(kw_only=True)
class DemoConfig:
    """Options of ``epochal demo``."""

    records: int = 20_000
    """Synthetic 32x32 RGB images to generate."""
    batch_size: int = 256
    """Samples per batch."""
    num_workers: int = 2
    """Loader worker processes."""
    seed: int = 0
    """Seed of the data order and of the augmentations."""


def _flip_and_jitter(record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    image = record["image"]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    noise = rng.integers(-8, 9, size=image.shape)
    return {"image": np.clip(image + noise, 0, 255).astype(np.uint8), "label": record["label"]}


def main(argv: list[str]) -> int:
    """Entry point of ``epochal demo``."""
    import torch
    from tqdm import tqdm

    import epochal

    cfg = tyro.cli(DemoConfig, args=argv, prog="epochal demo", description=__doc__.splitlines()[0])
    if cfg.records < 1 or cfg.batch_size < 1 or cfg.num_workers < 0:
        raise epochal.Error(
            f"need records >= 1, batch_size >= 1 and num_workers >= 0, got {dataclasses.asdict(cfg)}"
        )
    rng = np.random.default_rng(cfg.seed)
    labels = rng.integers(0, 10, cfg.records)
    images = (rng.random((cfg.records, 32, 32, 3)) * 32 + labels[:, None, None, None] * 22).astype(
        np.uint8
    )
    source = epochal.from_arrays(image=images, label=labels)

    def make() -> epochal.Loader:
        return epochal.Loader(
            source,
            cfg.batch_size,
            seed=cfg.seed,
            transform=_flip_and_jitter,
            num_workers=cfg.num_workers,
        )

    start = time.perf_counter()
    loader = make()
    reference = []
    for epoch in range(2):
        for batch in tqdm(loader, desc=f"epoch {epoch}", unit="batch"):
            reference.append(batch)
    elapsed = time.perf_counter() - start
    samples = sum(len(b["label"]) for b in reference)

    cut = len(reference) // 3
    first = make()
    it = iter(first)
    for _ in range(cut):
        next(it)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    tail = [b for _ in range(2 - resumed.epoch) for b in resumed]
    same = len(tail) == len(reference) - cut and all(
        torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        for a, b in zip(tail, reference[cut:])
    )
    print(
        f"read {samples:,} samples in 2 shuffled epochs at {samples / elapsed:,.0f} samples/s "
        f"({cfg.num_workers} workers, random flip + jitter per sample)"
    )
    print(f"loader state after {cut} batches: {json.dumps(state)}")
    print(
        f"resumed from that state: {'bitwise identical' if same else 'MISMATCH'} to the uninterrupted run"
    )
    return 0 if same else 1
