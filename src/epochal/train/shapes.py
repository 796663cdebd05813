"""Procedurally drawn shapes: a small image-classification dataset made in-process, no download.

Each record is a 3x32x32 ``uint8`` image of one shape (circle, square, triangle or cross)
at a random position, size, rotation and colour on a noisy background, with its class in
``label``. The same ``(n, seed)`` always gives the same arrays.
"""

from __future__ import annotations

import numpy as np

from epochal._errors import InvalidValueError

__all__ = ["CLASSES", "SPLITS", "make_shapes", "make_split"]

CLASSES = ("circle", "square", "triangle", "cross")
SPLITS = {"train": (1, 4000), "val": (2, 1000)}  # split -> (seed, default size): disjoint draws
_CHUNK = 1024  # images drawn per vectorised step (bounds the float64 temporaries)


def make_split(split: str, n: int | None = None) -> dict[str, np.ndarray]:
    """The ``"train"`` or ``"val"`` split (``n`` records, default 4000 / 1000)."""
    if split not in SPLITS:
        raise InvalidValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    seed, default = SPLITS[split]
    return make_shapes(default if n is None else n, seed=seed)


def make_shapes(n: int, *, seed: int, size: int = 32) -> dict[str, np.ndarray]:
    """``n`` shape images and labels: ``{"image": uint8 (n, 3, size, size), "label": int64 (n,)}``."""
    if n < 1 or size < 8:
        raise InvalidValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        images[start:stop] = _draw(labels[start:stop], rng, size)
    return {"image": images, "label": labels.astype(np.int64)}


def _draw(labels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    m = len(labels)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = (rng.uniform(0.3 * size, 0.7 * size, m)[:, None, None] for _ in range(2))
    r = rng.uniform(0.17 * size, 0.28 * size, m)[:, None, None]
    theta = rng.uniform(0, 2 * np.pi, m)[:, None, None]
    dx, dy = xx[None] - cx, yy[None] - cy
    u = np.cos(theta) * dx + np.sin(theta) * dy
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    circle = u**2 + v**2 <= r**2
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    triangle = np.ones_like(circle)
    for k in range(3):  # inside all three edges of an equilateral triangle (inradius r/2)
        a = 2 * np.pi * k / 3
        triangle &= np.cos(a) * u + np.sin(a) * v <= 0.5 * r
    bar = 0.28 * r
    cross = ((np.abs(u) <= bar) & (np.abs(v) <= r)) | ((np.abs(v) <= bar) & (np.abs(u) <= r))
    mask = np.choose(labels[:, None, None], [circle, square, triangle, cross])
    fg = rng.uniform(0.55, 1.0, (m, 3, 1, 1))
    bg = rng.uniform(0.0, 0.35, (m, 3, 1, 1))
    image = np.where(mask[:, None], fg, bg) + rng.normal(0.0, 0.06, (m, 3, size, size))
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
