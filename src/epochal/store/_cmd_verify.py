"""``epochal verify URL``: check every shard of a store against its manifest's checksums."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import tyro

__all__ = ["VerifyConfig", "main"]


@dataclass(kw_only=True)
class VerifyConfig:
    """Read every shard of a store and check its size and xxh3-64 checksum."""

    url: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="URL")]
    """The store: a local path or an fsspec URL."""


def main(argv: list[str]) -> int:
    """Run ``epochal verify``; returns 0 when the store is intact (else an error names the shards)."""
    cfg = tyro.cli(VerifyConfig, args=argv, prog="epochal verify")
    from tqdm import tqdm

    from epochal.store._fs import locate
    from epochal.store._reader import read_manifest
    from epochal.store._verify import verify

    total = read_manifest(locate(cfg.url)).num_bytes
    start = time.perf_counter()
    with tqdm(total=total, unit="B", unit_scale=True, desc="verifying") as bar:
        manifest = verify(cfg.url, on_bytes=bar.update)
    seconds = time.perf_counter() - start
    print(
        f"ok: {cfg.url}: {len(manifest.shards)} shard{'s' if len(manifest.shards) != 1 else ''}, "
        f"{manifest.num_records} record{'s' if manifest.num_records != 1 else ''}, "
        f"{manifest.num_bytes / 2**20:.1f} MiB verified in {seconds:.1f}s"
    )
    return 0
