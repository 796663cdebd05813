"""``epochal inspect URL``: schema, counts, sizes and the first few records of a store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import tyro

__all__ = ["InspectConfig", "main"]


@dataclass(kw_only=True)
class InspectConfig:
    """Print a store's schema, record and shard counts, sizes, metadata and a few records."""

    url: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="URL")]
    """The store: a local path or an fsspec URL."""
    records: int = 3
    """How many records to show."""


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        flat = value.ravel()
        head = ", ".join(str(v) for v in flat[:6].tolist())
        return f"array({value.dtype}, shape={list(value.shape)}) [{head}{', ...' if flat.size > 6 else ''}]"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes {bytes(value[:16])!r}{'...' if len(value) > 16 else ''}"
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def main(argv: list[str]) -> int:
    """Run ``epochal inspect``; returns the exit status."""
    cfg = tyro.cli(InspectConfig, args=argv, prog="epochal inspect")
    from epochal.store._reader import open_store

    store = open_store(cfg.url)
    m = store.manifest
    sizes = [s.bytes for s in m.shards]
    print(f"store        {cfg.url}")
    print(f"format       epochal-store v{m.version}, fingerprint {m.fingerprint}")
    print(f"records      {m.num_records:,}")
    print(
        f"shards       {len(m.shards)} ({m.num_bytes / 2**20:.1f} MiB; "
        f"{min(sizes) / 2**20:.1f}-{max(sizes) / 2**20:.1f} MiB each)"
    )
    print("columns")
    width = max(len(c.name) for c in m.columns)
    for c in m.columns:
        print(f"  {c.name:<{width}}  {c.describe()}")
    if m.metadata:
        text = json.dumps(m.metadata)
        print(f"metadata     {text if len(text) <= 200 else text[:197] + '...'}")
    for i in range(min(cfg.records, len(store))):
        print(f"record {i}")
        for name, value in store[i].items():
            print(f"  {name:<{width}}  {_short(value)}")
    return 0
