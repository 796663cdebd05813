"""``epochal verify URL``: check every shard of a store against its manifest."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from typing import Annotated

import tyro

__all__ = ["VerifyConfig", "main"]


@dataclass(kw_only=True)
class VerifyConfig:
    """Read every shard of a store and check its size, xxh3-64 checksum and structure."""

    url: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="URL")]
    """The store: a local path or an fsspec URL."""
    cache: bool = False
    """For a remote store, also check this machine's cached copies of its shards (corrupt ones are removed)."""
    cache_dir: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """The shard cache to check (default $EPOCHAL_CACHE or ~/.cache/epochal/stores)."""


def main(argv: list[str]) -> int:
    """Run ``epochal verify``; returns 0 when the store is intact (else an error names the shards)."""
    cfg = tyro.cli(VerifyConfig, args=argv, prog="epochal verify")
    from tqdm import tqdm

    from epochal.store._fs import locate
    from epochal.store._reader import read_manifest
    from epochal.store._verify import verify, verify_cache

    total = read_manifest(locate(cfg.url)).num_bytes
    start = time.perf_counter()
    with tqdm(total=total, unit="B", unit_scale=True, desc="verifying", disable=None) as bar:
        manifest = verify(cfg.url, on_bytes=bar.update)
    seconds = time.perf_counter() - start
    print(
        f"ok: {cfg.url}: {len(manifest.shards)} shard{'s' if len(manifest.shards) != 1 else ''}, "
        f"{manifest.num_records} record{'s' if manifest.num_records != 1 else ''}, "
        f"{manifest.num_bytes / 2**20:.1f} MiB verified in {seconds:.1f}s"
    )
    if cfg.cache:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checked, removed = verify_cache(cfg.url, cache_dir=cfg.cache_dir)
        for warning in caught:
            print(f"epochal verify: warning: {warning.message}", file=sys.stderr)
        print(f"cache: {checked} cached shard copies checked, {len(removed)} corrupt ones removed")
    return 0
