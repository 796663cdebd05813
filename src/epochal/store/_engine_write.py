"""The one function every engine adapter runs in its tasks: write one partition.

``write_partition`` takes what an engine hands a task (record dicts, a pandas frame, an
Arrow table, Arrow/numpy blocks) and writes it as partition ``i`` of a parallel build;
``epochal.merge`` commits the store once every partition has returned. Columnar data
goes through :class:`~epochal.store._record_blocks.Blocks` (no per-record Python work), record
dicts through the row writer's checks.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from epochal.store._errors import StoreError
from epochal.store._format import MANIFEST_NAME
from epochal.store._fs import locate
from epochal.store._record_blocks import Block, Blocks
from epochal.store._writer import DEFAULT_SHARD_SIZE, write

__all__ = ["refuse_finished_store", "write_partition"]


def refuse_finished_store(
    dest: str, *, overwrite: bool, storage_options: Mapping[str, Any] | None
) -> None:
    """Before any task runs: a finished store at ``dest`` is an error unless ``overwrite``.

    With ``overwrite`` the old store stays readable until the merge replaces its manifest
    in one step (partitions are written beside it).
    """
    loc = locate(dest, **dict(storage_options or {}))
    if not overwrite and loc.exists(MANIFEST_NAME):
        raise StoreError(
            f"{loc.url} already holds a finished store; pass overwrite=True to replace it"
        )


def _columnar(data: Any) -> bool:
    return isinstance(data, (Blocks, Block, pa.Table, pa.RecordBatch)) or (
        type(data).__name__ == "DataFrame" and hasattr(data, "to_numpy")
    )


def write_partition(
    data: Any,
    dest: str | os.PathLike[str],
    *,
    partition: int,
    num_partitions: int | None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    metadata: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one partition of a parallel build; runs inside an engine's task.

    Args:
        data: an iterable of record dicts, a pandas frame, an Arrow table or batch, or
            ``Blocks`` of any of those.
        dest: the store's location (a path every worker shares, or an fsspec URL).
        partition: this partition's number, ``0 <= partition < num_partitions``.
        num_partitions: how many partitions the build has; None if the engine knows it
            only at the end (then pass it to ``epochal.merge``).
        shard_size: target bytes of record data per shard.
        metadata: JSON-serialisable data kept in the manifest.
        storage_options: passed to fsspec (e.g. an S3 endpoint).

    Returns:
        ``{"partition", "attempt", "records"}``: small enough to send back to a driver.
    """
    attempt = uuid.uuid4().hex[:12]  # each run of a task is a new attempt at its partition
    records: Iterable[Any] = (
        Blocks([data]) if _columnar(data) and not isinstance(data, Blocks) else data
    )
    part = write(
        records,
        dest,
        shard_size=shard_size,
        metadata=metadata,
        partition=partition,
        num_partitions=num_partitions,
        attempt=attempt,
        storage_options=storage_options,
    )
    return {"partition": partition, "attempt": attempt, "records": part.num_records}
