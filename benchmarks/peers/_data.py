"""The benchmark's two datasets, written once as raw files that every system converts.

(a) ``fixed``: n records of 3,072 uint8 bytes (a 32x32x3 image) + an int64 label.
(b) ``varlen``: n binary records of 1-8 KiB each + an int64 label.

The label of record ``i`` is ``i``: every measurement reads the order a loader delivered
from the labels alone, whatever the system does with the payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KINDS", "Raw", "make_raw", "open_raw", "warm"]

KINDS = ("fixed", "varlen")
FIXED_BYTES = 3072
VARLEN_MIN, VARLEN_MAX = 1024, 8192
_CHUNK = 10_000


@dataclass(frozen=True)
class Raw:
    """One dataset as raw files: payload bytes (fixed rows, or a flat blob + offsets)."""

    kind: str
    n: int
    payload: np.ndarray  # fixed: (n, 3072) uint8 memmap; varlen: flat uint8 memmap
    offsets: np.ndarray | None  # varlen: n + 1 int64 offsets into payload

    @property
    def nbytes(self) -> int:
        return int(self.payload.nbytes)

    def record(self, i: int) -> bytes:
        """Record ``i``'s payload as bytes."""
        if self.offsets is None:
            return self.payload[i].tobytes()
        return self.payload[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in source order as ``{"data": ..., "label": i}``.

        Fixed records come as uint8 arrays (the natural type for an image), variable
        records as ``bytes``.
        """
        for lo in range(0, self.n, _CHUNK):
            hi = min(self.n, lo + _CHUNK)
            if self.offsets is None:
                block = np.array(self.payload[lo:hi])
                for j in range(hi - lo):
                    yield {"data": block[j], "label": lo + j}
            else:
                for i in range(lo, hi):
                    yield {"data": self.record(i), "label": i}


def make_raw(root: Path, kind: str, n: int, *, seed: int = 0) -> Raw:
    """Write dataset ``kind`` with ``n`` records under ``root`` (kept when already there)."""
    root.mkdir(parents=True, exist_ok=True)
    meta = root / "meta.json"
    if meta.exists() and json.loads(meta.read_text()) == {"kind": kind, "n": n, "seed": seed}:
        return open_raw(root)
    rng = np.random.default_rng(seed)
    if kind == "fixed":
        data = np.memmap(root / "payload.u8", np.uint8, "w+", shape=(n, FIXED_BYTES))
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            data[lo:hi] = rng.integers(0, 256, (hi - lo, FIXED_BYTES), dtype=np.uint8)
    elif kind == "varlen":
        sizes = rng.integers(VARLEN_MIN, VARLEN_MAX + 1, n, dtype=np.int64)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        np.save(root / "offsets.npy", offsets)
        data = np.memmap(root / "payload.u8", np.uint8, "w+", shape=(int(offsets[-1]),))
        step = _CHUNK * 4096
        for lo in range(0, len(data), step):
            hi = min(len(data), lo + step)
            data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {KINDS}")
    data.flush()
    del data
    meta.write_text(json.dumps({"kind": kind, "n": n, "seed": seed}))
    return open_raw(root)


def open_raw(root: Path) -> Raw:
    """Open a dataset written by :func:`make_raw` (read-only memmaps)."""
    meta = json.loads((root / "meta.json").read_text())
    kind, n = meta["kind"], meta["n"]
    if kind == "fixed":
        payload = np.memmap(root / "payload.u8", np.uint8, "r", shape=(n, FIXED_BYTES))
        return Raw(kind, n, payload, None)
    offsets = np.load(root / "offsets.npy")
    payload = np.memmap(root / "payload.u8", np.uint8, "r", shape=(int(offsets[-1]),))
    return Raw(kind, n, payload, offsets)


def warm(path: Path) -> int:
    """Read every file under ``path`` once, so that timings see a warm page cache."""
    total = 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    return total
