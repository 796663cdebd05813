"""Write an epochal store from a Spark DataFrame or RDD: ``epochal.spark.write_dataframe``.

Spark partition ``i`` becomes partition ``i`` of a parallel build: each task runs
:func:`write_rows` (through ``rdd.mapPartitionsWithIndex``) on its rows, and the driver
runs ``epochal.merge`` once every task has returned. Records are in the RDD's order.
When Spark reruns a failed task, the new attempt rewrites its partition and the merge
keeps exactly one attempt of each, so no record is duplicated or lost.

Rows become records with ``Row.asDict()``: numbers, strings and binary map to the
store's columns; array columns of numbers become numpy arrays (one shape per column).

The same recipe by hand, for a pipeline of your own::

    k = rdd.getNumPartitions()
    rdd.mapPartitionsWithIndex(
        functools.partial(epochal.spark.write_rows, dest=url, num_partitions=k)
    ).collect()
    epochal.merge(url)

Needs PySpark and Java on the cluster (not an extra of epochal: PySpark is a 300+ MB
download, so install it the way your cluster does); ``import epochal`` does not import it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from epochal.store._engine_write import refuse_finished_store, write_partition
from epochal.store._format import Manifest
from epochal.store._writer import DEFAULT_SHARD_SIZE, merge

__all__ = ["write_dataframe", "write_rows"]


def _record(row: Any) -> dict[str, Any]:
    record = row.asDict() if hasattr(row, "asDict") else dict(row)
    for name, value in record.items():
        if isinstance(value, bytearray):  # Spark's BinaryType
            record[name] = bytes(value)
        elif isinstance(value, list):  # ArrayType of numbers
            record[name] = np.asarray(value)
    return record


def write_rows(
    index: int,
    rows: Iterable[Any],
    *,
    dest: str,
    num_partitions: int,
    shard_size: int = DEFAULT_SHARD_SIZE,
    metadata: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Write Spark partition ``index`` (its rows) as partition ``index`` of the store.

    Shaped for ``rdd.mapPartitionsWithIndex``: yields one small dict,
    ``{"partition", "attempt", "records"}``, for the driver to collect.
    """
    yield write_partition(
        (_record(row) for row in rows),
        dest,
        partition=index,
        num_partitions=num_partitions,
        shard_size=shard_size,
        metadata=metadata,
        storage_options=storage_options,
    )


def write_dataframe(
    data: Any,
    dest: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Write a Spark DataFrame (or RDD of rows/dicts) to a store at ``dest``.

    Args:
        data: a ``pyspark.sql.DataFrame`` or an RDD.
        dest: a path every executor shares, or an fsspec URL such as ``s3://bucket/name``.
        shard_size: target bytes of record data per shard.
        metadata: JSON-serialisable data kept in the manifest.
        overwrite: replace a finished store at ``dest`` (the old one stays readable
            until the merge replaces it); without it that is an error, before any task.
        storage_options: passed to fsspec in every task (e.g. an S3 endpoint).

    Returns:
        The manifest of the finished store.
    """
    url = os.fspath(dest)
    refuse_finished_store(url, overwrite=overwrite, storage_options=storage_options)
    rdd = data.rdd if hasattr(data, "rdd") else data
    task = functools.partial(
        write_rows,
        dest=url,
        num_partitions=rdd.getNumPartitions(),
        shard_size=shard_size,
        metadata=metadata,
        storage_options=storage_options,
    )
    rdd.mapPartitionsWithIndex(task).collect()
    return merge(url, storage_options=storage_options)
