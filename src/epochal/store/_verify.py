"""``verify``: check a whole store against its manifest, reporting every bad shard."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import xxhash

from epochal.store._errors import CorruptStoreError
from epochal.store._format import SHARDS_DIR, Manifest
from epochal.store._fs import locate
from epochal.store._reader import read_manifest

__all__ = ["verify"]

_CHUNK = 8 << 20


def verify(
    url: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Manifest:
    """Read every shard of the store at ``url`` and check its size and xxh3-64 checksum.

    Reads the store itself (for object storage: straight from the bucket, not the cache).

    Args:
        url: a local path or fsspec URL.
        storage_options: passed to fsspec.
        on_bytes: called with the number of bytes read after each chunk (progress bars).

    Returns:
        The manifest, when every shard is intact.

    Raises:
        CorruptStoreError: naming every missing, truncated or corrupt shard.
        StoreError: when there is no finished store at ``url``.
    """
    loc = locate(url, **dict(storage_options or {}))
    manifest = read_manifest(loc)
    problems: list[str] = []
    for shard in manifest.shards:
        digest = xxhash.xxh3_64()
        size = 0
        try:
            with loc.fs.open(loc.path(SHARDS_DIR, shard.name), "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except FileNotFoundError:
            problems.append(f"{SHARDS_DIR}/{shard.name} is missing")
            continue
        if size != shard.bytes:
            problems.append(
                f"{SHARDS_DIR}/{shard.name} has {size} bytes, the manifest says {shard.bytes}"
            )
        elif digest.hexdigest() != shard.xxh3:
            problems.append(
                f"{SHARDS_DIR}/{shard.name} is corrupt (xxh3 {digest.hexdigest()}, the manifest says {shard.xxh3})"
            )
    if problems:
        raise CorruptStoreError(
            f"store {loc.url}: {len(problems)} of {len(manifest.shards)} shards are bad: {'; '.join(problems)}"
        )
    return manifest
