"""``write`` and ``merge``: records -> Arrow IPC shards + a manifest written last.

A build is crash-safe by order of operations: shards first (each one atomically), the
manifest last (atomically). Without ``manifest.json`` a folder is not a store, so a build
that dies midway is never opened as finished. Re-running the build replaces it: shard
names are deterministic, so the rerun overwrites them, and files no manifest lists are
removed once the new manifest is in place.

Parallel builds: each writer calls ``write(..., partition=i, num_partitions=k)`` and
produces its own shards plus ``_partitions/part-<i>.json``; ``merge(dest)`` then checks
that all k partitions are there with one schema and writes the store's manifest, with the
shards in partition order. Any engine that can run k functions (multiprocessing, Ray,
Spark, Dask) can drive it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import xxhash

from epochal.store._blocks import write_block_index
from epochal.store._columns import ColumnBuilder, arrow_schema
from epochal.store._errors import StoreError
from epochal.store._format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PARTITIONS_DIR,
    SHARDS_DIR,
    Column,
    Manifest,
    Shard,
    infer_column,
)
from epochal.store._fs import Location, locate

__all__ = ["DEFAULT_SHARD_SIZE", "merge", "write"]

DEFAULT_SHARD_SIZE = 64 << 20  # bytes of records per shard: big enough to amortise, small to fetch
_PARTITION_FORMAT = f"{FORMAT}-partition"


def write(
    records: Iterable[Mapping[str, Any]],
    dest: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    partition: int | None = None,
    num_partitions: int | None = None,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Write records to a store at ``dest`` (a local path or any fsspec URL).

    Args:
        records: any iterable of dicts (a generator is fine; its length need not be
            known). The first record fixes the schema: bytes, str, int, float, bool,
            numpy scalars and fixed-shape numpy arrays. Every later record must have the
            same columns and types, or a StoreError names the record and the column.
        dest: where the store goes, e.g. ``"data/shapes"`` or ``"s3://bucket/shapes"``.
        shard_size: target bytes of record data per shard.
        metadata: JSON-serialisable data kept in the manifest (e.g. class names).
        overwrite: replace a finished store at ``dest``; without it that is an error.
            An unfinished build (no manifest) is always replaced.
        partition: with ``num_partitions``, write only partition ``partition`` of a
            parallel build; call :func:`merge` when all partitions are written.
        num_partitions: the number of partitions of a parallel build.
        progress: show a progress bar.
        storage_options: passed to fsspec (e.g. ``{"endpoint_url": ...}`` for S3).

    Returns:
        The manifest of the finished store, or of this partition's shards.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of bytes, got {shard_size}")
    if (partition is None) != (num_partitions is None):
        raise ValueError(
            f"pass partition and num_partitions together (got partition={partition}, num_partitions={num_partitions})"
        )
    if num_partitions is not None and not 0 <= int(partition or 0) < num_partitions:
        raise ValueError(f"partition must be in [0, {num_partitions}), got {partition}")
    meta = dict(metadata or {})
    try:
        json.dumps(meta)
    except TypeError as err:
        raise StoreError(f"metadata must be JSON-serialisable: {err}") from err
    loc = locate(dest, **dict(storage_options or {}))
    if loc.exists(MANIFEST_NAME):
        if not overwrite:
            raise StoreError(
                f"{loc.url} already holds a finished store; pass overwrite=True (epochal build --overwrite) to replace it"
            )
        loc.remove(MANIFEST_NAME)  # from here on the old store is no longer openable
    index = 0 if partition is None else int(partition)
    columns, shards = _write_shards(records, loc, index, shard_size=shard_size, progress=progress)
    if partition is None:
        if not shards:
            raise StoreError(f"no records to write to {loc.url}; a store needs at least one record")
        return _finish(loc, Manifest(columns=columns, shards=tuple(shards), metadata=meta))
    body = {
        "format": _PARTITION_FORMAT,
        "version": FORMAT_VERSION,
        "partition": index,
        "num_partitions": num_partitions,
        "columns": [c.to_json() for c in columns],
        "shards": [s.to_json() for s in shards],
        "metadata": meta,
    }
    loc.put(json.dumps(body, indent=1).encode(), PARTITIONS_DIR, _partition_name(index))
    _remove_unlisted(loc, {s.name for s in shards}, prefix=_shard_prefix(index))
    return Manifest(columns=columns, shards=tuple(shards), metadata=meta)


def merge(
    dest: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
) -> Manifest:
    """Finish a parallel build: check every partition is written, then write the manifest.

    Shards are ordered by partition, then as each writer wrote them; the store's metadata
    is that of the first non-empty partition. Files of earlier attempts that the new
    manifest does not list are removed afterwards.

    Raises:
        StoreError: when a partition is missing, or partitions disagree on the schema.
    """
    loc = locate(dest, **dict(storage_options or {}))
    parts: dict[int, dict[str, Any]] = {}
    for name in loc.listdir(PARTITIONS_DIR):
        if not name.endswith(".json"):
            continue
        try:
            body = json.loads(loc.read(PARTITIONS_DIR, name))
            assert body["format"] == _PARTITION_FORMAT
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            raise StoreError(
                f"partition manifest {PARTITIONS_DIR}/{name} of {loc.url} is damaged: {err!r}"
            ) from err
        parts[int(body["partition"])] = body
    if not parts:
        raise StoreError(
            f"nothing to merge at {loc.url}: no partitions written (expected {PARTITIONS_DIR}/*.json)"
        )
    expected = {int(b["num_partitions"]) for b in parts.values()}
    if len(expected) != 1:
        raise StoreError(f"partitions at {loc.url} disagree on num_partitions: {sorted(expected)}")
    total = expected.pop()
    missing = sorted(set(range(total)) - set(parts))
    if missing:
        raise StoreError(
            f"cannot merge {loc.url}: partitions {missing} of {total} are not written yet"
        )
    columns: tuple[Column, ...] = ()
    shards: list[Shard] = []
    meta: dict[str, Any] = {}
    for i in range(total):
        body = parts[i]
        if not body["shards"]:
            continue
        these = tuple(Column.from_json(c) for c in body["columns"])
        if columns and these != columns:
            raise StoreError(
                f"cannot merge {loc.url}: partition {i} has columns "
                f"{[c.describe() for c in these]}, earlier partitions have {[c.describe() for c in columns]}"
            )
        columns = these
        meta = meta or dict(body.get("metadata") or {})
        shards += [Shard.from_json(s) for s in body["shards"]]
    if not shards:
        raise StoreError(f"cannot merge {loc.url}: every partition is empty")
    return _finish(loc, Manifest(columns=columns, shards=tuple(shards), metadata=meta))


def _finish(loc: Location, manifest: Manifest) -> Manifest:
    loc.put(manifest.to_bytes(), MANIFEST_NAME)
    _remove_unlisted(loc, {s.name for s in manifest.shards}, prefix="")
    for name in loc.listdir(PARTITIONS_DIR):
        loc.remove(PARTITIONS_DIR, name)
    return manifest


def _remove_unlisted(loc: Location, keep: set[str], *, prefix: str) -> None:
    """Delete shard files (and temporary files) of an earlier attempt that no manifest lists."""
    for name in loc.listdir(SHARDS_DIR):
        if name not in keep and name.lstrip(".").startswith(prefix):
            loc.remove(SHARDS_DIR, name)


def _shard_prefix(partition: int) -> str:
    return f"part-{partition:05d}-"


def _partition_name(partition: int) -> str:
    return f"part-{partition:05d}.json"


def _write_shards(
    records: Iterable[Mapping[str, Any]],
    loc: Location,
    partition: int,
    *,
    shard_size: int,
    progress: bool,
) -> tuple[tuple[Column, ...], list[Shard]]:
    columns: tuple[Column, ...] = ()
    builders: list[ColumnBuilder] = []
    names: tuple[str, ...] = ()
    name_set: set[str] = set()
    shards: list[Shard] = []
    pending = pending_bytes = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit=" rec", desc="writing", unit_scale=True)
    try:
        for number, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise StoreError(
                    f"record {number} is a {type(record).__name__}; records must be dicts of columns"
                )
            if not builders:
                try:
                    columns = tuple(infer_column(str(k), v) for k, v in record.items())
                except StoreError as err:
                    raise StoreError(f"record {number}: {err}") from None
                if not columns:
                    raise StoreError("record 0 has no columns; records must be non-empty dicts")
                builders = [ColumnBuilder(c) for c in columns]
                names = tuple(c.name for c in columns)
                name_set = set(names)
            if record.keys() != name_set:
                raise StoreError(
                    f"record {number} has columns {sorted(map(str, record))}, expected {sorted(names)} "
                    f"(from the first record)"
                )
            for builder, name in zip(builders, names, strict=True):
                pending_bytes += builder.append(record[name], number)
            pending += 1
            if bar is not None:
                bar.update(1)
            if pending_bytes >= shard_size:
                shards.append(_flush(loc, columns, builders, partition, len(shards), pending))
                pending = pending_bytes = 0
        if pending:
            shards.append(_flush(loc, columns, builders, partition, len(shards), pending))
    finally:
        if bar is not None:
            bar.close()
    return columns, shards


def _flush(
    loc: Location,
    columns: tuple[Column, ...],
    builders: list[ColumnBuilder],
    partition: int,
    seq: int,
    n: int,
) -> Shard:
    """Encode the pending records as one Arrow IPC file (one record batch) and store it."""
    schema = arrow_schema(columns)
    batch = pa.record_batch([b.finish() for b in builders], schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as out:
        out.write_batch(batch)
    data = sink.getvalue()
    name = f"{_shard_prefix(partition)}{seq:06d}.arrow"
    loc.put(data, SHARDS_DIR, name)
    granule_records, granules_xxh3 = write_block_index(loc, name, data, columns, n)
    return Shard(
        name=name,
        records=n,
        bytes=data.size,
        xxh3=xxhash.xxh3_64_hexdigest(data),
        granule_records=granule_records,
        granules_xxh3=granules_xxh3,
    )
