"""Write an epochal store from a Ray Dataset: ``ds.write_datasink(epochal.ray.Sink(url))``.

Each Ray write task writes its blocks as one partition of a parallel build
(``epochal.write(..., partition=task, ...)``), straight from the blocks' Arrow columns
(numbers, strings, binary and fixed-shape tensors are never turned into Python rows);
the completion hook, which Ray calls once every task has succeeded, merges the
partitions into the store. A task that Ray retries after its worker died writes its
partition again under a new attempt, and the merge keeps exactly one attempt of each
partition, so a retry never duplicates or loses records.

Order: partitions are merged in task order, which is the dataset's order when Ray
preserves it (``ray.data.DataContext.get_current().execution_options.preserve_order =
True``); otherwise records are in the order Ray happened to run the tasks.

Requires the ``ray`` extra (``pip install 'epochal[ray]'``); ``import epochal`` does not
import Ray.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ray.data import Datasink

from epochal.store._engine_write import refuse_finished_store, write_partition
from epochal.store._errors import StoreError
from epochal.store._format import Manifest
from epochal.store._record_blocks import Blocks
from epochal.store._writer import DEFAULT_SHARD_SIZE, merge

__all__ = ["Sink", "write_dataset"]


class Sink(Datasink):
    """A Ray Data datasink that writes an epochal store at ``dest``.

    Args:
        dest: a local path (shared by every Ray node) or an fsspec URL such as
            ``s3://bucket/name``.
        shard_size: target bytes of record data per shard.
        metadata: JSON-serialisable data kept in the manifest.
        overwrite: replace a finished store at ``dest`` (checked on the driver before
            any task runs; the old store stays readable until the merge replaces it);
            without it that is an error.
        storage_options: passed to fsspec in every task (e.g. an S3 endpoint).

    After ``ds.write_datasink(sink)`` returns, ``sink.manifest`` is the store's manifest.
    """

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        shard_size: int = DEFAULT_SHARD_SIZE,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.dest = os.fspath(dest)
        self.shard_size = shard_size
        self.metadata = dict(metadata or {})
        self.overwrite = overwrite
        self.storage_options = dict(storage_options or {})
        self.manifest: Manifest | None = None

    def on_write_start(self, schema: Any = None) -> None:
        """Refuse a finished store at ``dest`` (unless ``overwrite``) before tasks start."""
        refuse_finished_store(
            self.dest, overwrite=self.overwrite, storage_options=self.storage_options
        )

    def get_name(self) -> str:
        return "epochal"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        """Write this task's blocks as partition ``ctx.task_idx`` (runs in a Ray worker)."""
        return write_partition(
            Blocks(blocks),
            self.dest,
            partition=ctx.task_idx,
            num_partitions=None,  # Ray tells the completion hook how many tasks ran
            shard_size=self.shard_size,
            metadata=self.metadata,
            storage_options=self.storage_options,
        )

    def on_write_complete(self, write_result: Any) -> None:
        """Every task succeeded: merge their partitions into the store (runs on the driver)."""
        returns = write_result.write_returns  # one per task, in the order they finished
        tasks = sorted(r["partition"] for r in returns)
        if tasks != list(range(len(tasks))):
            raise StoreError(f"Ray reported write tasks {tasks}; expected 0..{len(tasks) - 1}")
        self.manifest = merge(
            self.dest, num_partitions=len(tasks), storage_options=self.storage_options
        )


def write_dataset(dataset: Any, dest: str | os.PathLike[str], **options: Any) -> Manifest:
    """Write ``dataset`` to a store at ``dest`` and return its manifest.

    Args:
        dataset: a ``ray.data.Dataset``.
        dest: where the store goes (a path every node shares, or an fsspec URL).
        **options: :class:`Sink`'s keyword arguments.
    """
    sink = Sink(dest, **options)
    dataset.write_datasink(sink)
    assert sink.manifest is not None
    return sink.manifest
