"""``verify``: check a whole store against its manifest, reporting every bad shard.

It fails whenever a read would: the manifest gets the same checks as ``open``, every
shard the same structural checks as its first use in a read (see ``_reader``) plus its
full xxh3-64 checksum and a check of every value (offsets, UTF-8 of str columns), and
every shard's granule index (``blocks/<shard>.json``, which range reads of a remote store
check each granule against): its digest, and each granule's digest against the shard.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import xxhash

from epochal.store._blocks import BLOCKS_DIR, check_granules, index_name
from epochal.store._checks import check_shard
from epochal.store._errors import CorruptStoreError
from epochal.store._format import SHARDS_DIR, Manifest, Shard
from epochal.store._fs import Location, locate
from epochal.store._reader import _OpenShard, read_manifest
from epochal.store._remote import ShardCache

__all__ = ["verify", "verify_cache"]

_CHUNK = 8 << 20


def verify(
    url: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Manifest:
    """Check every shard of the store at ``url``: size, xxh3-64 checksum, structure, values.

    Reads the store itself (for object storage: straight from the bucket, not the cache;
    see :func:`verify_cache` for that).

    Args:
        url: a local path or fsspec URL.
        storage_options: passed to fsspec.
        on_bytes: called with the number of bytes read after each chunk (progress bars).

    Returns:
        The manifest, when every shard is intact.

    Raises:
        CorruptStoreError: naming every missing, truncated, corrupt or malformed shard,
            or a damaged manifest.
        StoreError: when there is no finished store at ``url``.
    """
    loc = locate(url, **dict(storage_options or {}))
    manifest = read_manifest(loc)
    problems: list[str] = []
    for shard in manifest.shards:
        problem = _check_one(loc, manifest, shard, on_bytes)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise CorruptStoreError(
            f"store {loc.url}: {len(problems)} of {len(manifest.shards)} shards are bad: {'; '.join(problems)}"
        )
    return manifest


def _check_one(
    loc: Location, manifest: Manifest, shard: Shard, on_bytes: Callable[[int], None] | None
) -> str | None:
    """What is wrong with one shard, or None."""
    name = f"{SHARDS_DIR}/{shard.name}"
    digest = xxhash.xxh3_64()
    size = 0
    # a remote shard is checked from memory (one at a time); a local one from its map
    kept: bytearray | None = None if loc.is_local else bytearray()
    try:
        with loc.fs.open(loc.path(SHARDS_DIR, shard.name), "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if kept is not None and size <= shard.bytes:
                    kept += chunk
                if on_bytes is not None:
                    on_bytes(len(chunk))
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as err:
        return f"{name} cannot be read ({err})"
    if size != shard.bytes:
        return f"{name} has {size} bytes, the manifest says {shard.bytes}"
    if digest.hexdigest() != shard.xxh3:
        return f"{name} is corrupt (xxh3 {digest.hexdigest()}, the manifest says {shard.xxh3})"
    try:
        if kept is None:
            _OpenShard(
                loc.path(SHARDS_DIR, shard.name),
                shard,
                manifest.columns,
                name,
                version=manifest.version,
                full=True,
            )
        else:
            check_shard(
                pa.BufferReader(pa.py_buffer(kept)),
                shard,
                manifest.columns,
                name,
                version=manifest.version,
                full=True,
            )
    except CorruptStoreError as err:
        return str(err).removeprefix("shard ")
    if shard.granules_xxh3 is not None:
        return _check_sidecar(loc, manifest, shard, kept)
    return None


def _check_sidecar(
    loc: Location, manifest: Manifest, shard: Shard, kept: bytearray | None
) -> str | None:
    """What is wrong with a shard's granule index (range reads check against it), or None."""
    name = f"{SHARDS_DIR}/{shard.name}"
    try:
        raw = loc.read(BLOCKS_DIR, index_name(shard.name))
    except FileNotFoundError:
        return f"{name}: its granule index {BLOCKS_DIR}/{index_name(shard.name)} is missing"
    except OSError as err:
        return f"{name}: its granule index cannot be read ({err})"
    try:
        if kept is not None:
            check_granules(raw, kept, shard, manifest.columns, where=name)
        else:
            path = loc.path(SHARDS_DIR, shard.name)
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                check_granules(raw, data, shard, manifest.columns, where=name)
    except CorruptStoreError as err:
        return str(err).removeprefix("shard ")
    return None


def verify_cache(
    url: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[int, list[str]]:
    """Check the local cached copies of a remote store's shards; remove corrupt ones.

    Each removed copy is reported with a :class:`~epochal.store.StoreWarning` naming the
    shard; the next read downloads it again (verified).

    Returns:
        How many cached copies were checked, and the names of the shards whose copy was
        corrupt and has been removed.
    """
    loc = locate(url, **dict(storage_options or {}))
    manifest = read_manifest(loc)
    if loc.is_local:
        return 0, []
    cache = ShardCache(loc, manifest, cache_dir=None if cache_dir is None else os.fspath(cache_dir))
    return cache.check_cached()
