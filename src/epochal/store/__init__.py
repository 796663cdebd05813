"""epochal's store: any records -> random-access Arrow IPC shards + a manifest, locally or
on object storage; opened as a fast, fork-safe Source.

``write(records, dest)`` builds a store (``merge(dest)`` finishes a parallel one),
``open(url)`` reads it, ``verify(url)`` checks every checksum and structure,
``verify_cache(url)`` the local cached copies of a remote store. See ``_format`` for the
layout, ``_reader`` for what is checked when, ``_remote`` for the shard cache.
"""

from __future__ import annotations

from epochal.store._errors import CorruptStoreError, StoreError, StoreWarning
from epochal.store._format import FORMAT_VERSION, Column, Manifest, Shard
from epochal.store._reader import StoreSource
from epochal.store._reader import open_store as open
from epochal.store._verify import verify, verify_cache
from epochal.store._writer import merge, write

__all__ = [
    "FORMAT_VERSION",
    "Column",
    "CorruptStoreError",
    "Manifest",
    "Shard",
    "StoreError",
    "StoreSource",
    "StoreWarning",
    "merge",
    "open",
    "verify",
    "verify_cache",
    "write",
]
