"""Write an epochal store from a Dask bag or dataframe: ``epochal.dask.write(coll, url)``.

Partition ``i`` of the collection becomes partition ``i`` of a parallel build
(``epochal.write(..., partition=i, num_partitions=k)``): a bag's partition is a list of
record dicts, checked value by value like ``epochal.write``; a dataframe's partition is
a pandas frame whose columns go to shards through Arrow without per-record Python work.
Once every partition has finished, ``epochal.merge`` commits the store. Records are in
the collection's order. For a graph of your own, call :func:`write_partition` in each
task and ``epochal.merge(dest)`` when all have returned.

When a worker dies mid-task, Dask's scheduler runs the task again elsewhere; the new
attempt rewrites its partition, and the merge keeps exactly one attempt of each, so the
store holds every record exactly once.

Requires the ``dask`` extra (``pip install 'epochal[dask]'``); ``import epochal`` does not
import Dask.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dask

from epochal.store._engine_write import refuse_finished_store, write_partition
from epochal.store._format import Manifest
from epochal.store._writer import DEFAULT_SHARD_SIZE, merge

__all__ = ["write_collection", "write_partition"]


def write_collection(
    collection: Any,
    dest: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    **compute: Any,
) -> Manifest:
    """Write a ``dask.bag.Bag`` or ``dask.dataframe.DataFrame`` to a store at ``dest``.

    Args:
        collection: the bag (of record dicts) or dataframe.
        dest: a path every worker shares, or an fsspec URL such as ``s3://bucket/name``.
        shard_size: target bytes of record data per shard.
        metadata: JSON-serialisable data kept in the manifest.
        overwrite: replace a finished store at ``dest`` (the old one stays readable
            until the merge replaces it); without it that is an error, before any task.
        storage_options: passed to fsspec in every task (e.g. an S3 endpoint).
        **compute: passed to ``dask.compute`` (e.g. ``scheduler=client``).

    Returns:
        The manifest of the finished store.
    """
    url = os.fspath(dest)
    refuse_finished_store(url, overwrite=overwrite, storage_options=storage_options)
    parts = collection.to_delayed()
    if hasattr(parts, "ravel"):  # a dataframe's delayed partitions come as an array
        parts = list(parts.ravel())
    tasks = [
        dask.delayed(write_partition, pure=False)(
            part,
            url,
            partition=i,
            num_partitions=len(parts),
            shard_size=shard_size,
            metadata=metadata,
            storage_options=storage_options,
        )
        for i, part in enumerate(parts)
    ]
    dask.compute(*tasks, **compute)
    return merge(url, storage_options=storage_options)
