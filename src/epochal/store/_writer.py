"""``write`` and ``merge``: records -> Arrow IPC shards + a manifest written last.

Every build has its own id, and so its own shard names (``part-<partition>-<id>-<seq>``),
its own lease (see ``_lease``) and, once finished, a manifest that names exactly its
shards. From that:

- **Crash-safe**: shards first (each one atomically), the manifest last (atomically).
  Without ``manifest.json`` a folder is not a store, so a build that dies midway is never
  opened as finished; rerunning the build completes it and removes the dead one's files.
- **Safe overwrite**: ``overwrite=True`` writes the new build beside the old store, which
  stays readable until the new manifest replaces the old one in one atomic step; only
  then are the old shards removed. A source that raises, a bad record or a SIGKILL leave
  the old store as it was.
- **Writers never mix**: a second whole-store write to a destination that a live build is
  writing is refused with an error naming that build; and should two slip past the check
  (object storage has no locks), each still commits only its own shards, so a reader sees
  one build or the other, never a mix. Files are removed only when the current manifest
  does not list them and their build is not live.

Parallel builds: each writer calls ``write(..., partition=i, num_partitions=k)``; every
call is one *attempt* with its own id (``attempt=``, default a fresh one), which writes
shards named by it and, when done, the record ``_partitions/part-<i>-<attempt>.json``
naming exactly those shards. Retried or speculative attempts of one partition therefore
never touch each other's files. ``merge(dest)`` picks one finished attempt per partition
(the first committed; ties by attempt id), checks one schema, writes the manifest with
the shards in partition order and removes every other attempt's files. Any engine that
can run k functions (multiprocessing, Ray, Spark, Dask) can drive it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import xxhash

from epochal._errors import InvalidValueError
from epochal.sources._hf import hf_list_columns, hf_records, is_hf_dataset
from epochal.store._blocks import write_block_index
from epochal.store._columns import ColumnBuilder, arrow_schema, check_record, infer_columns
from epochal.store._errors import StoreError
from epochal.store._format import (
    FORMAT,
    MANIFEST_NAME,
    PARTITIONS_DIR,
    SHARD_COLUMNS_KEY,
    SHARD_POSITION_KEY,
    SHARDS_DIR,
    Column,
    Manifest,
    Shard,
    shard_build,
    shard_position,
    version_for,
)
from epochal.store._fs import Location, locate
from epochal.store._lease import BUILDS_DIR, Lease, fresh_listing, live_leases, new_build_id
from epochal.store._record_blocks import Blocks, write_block_shards

__all__ = ["DEFAULT_SHARD_SIZE", "merge", "write"]

DEFAULT_SHARD_SIZE = 64 << 20  # bytes of records per shard: big enough to amortise, small to fetch
_PARTITION_FORMAT = f"{FORMAT}-partition"
_ATTEMPT = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # ends up in file names: no '-', '/', '.'
_RECORD = re.compile(r"^part-(\d{5})-([A-Za-z0-9_]{1,64})\.json$")


def write(
    records: Iterable[Mapping[str, Any]],
    dest: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    partition: int | None = None,
    num_partitions: int | None = None,
    attempt: str | int | None = None,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    lists: Iterable[str] = (),
) -> Manifest:
    """Write records to a store at ``dest`` (a local path or any fsspec URL).

    Args:
        records: any iterable of dicts (a generator is fine; its length need not be
            known), or a Hugging Face ``datasets.Dataset`` (its numeric list columns
            become array columns, other lists and dicts JSON strings, as with
            ``epochal build file.parquet``). The first record fixes the schema: bytes,
            str, int, float, bool, numpy scalars and fixed-shape numpy arrays; a list of
            numbers is a variable-length 1-D array column (int64 or float64 elements; see
            ``lists`` for other dtypes). Every later record must have the
            same columns and types, or a StoreError names the record and the column.
            ``epochal.store._record_blocks.Blocks`` of Arrow/pandas/numpy batches writes the
            same store without per-record Python work (the engines' path).
        dest: where the store goes, e.g. ``"data/shapes"`` or ``"s3://bucket/shapes"``.
        shard_size: target bytes of record data per shard.
        metadata: JSON-serialisable data kept in the manifest (e.g. class names).
        overwrite: replace a finished store at ``dest``; without it that is an error.
            The old store stays readable until the new one is committed. An unfinished
            build (no manifest) is always replaced.
        partition: with ``num_partitions``, write only partition ``partition`` of a
            parallel build; call :func:`merge` when all partitions are written.
        num_partitions: the number of partitions of a parallel build; None when the
            engine learns it only at the end (Ray), then :func:`merge` is told it.
        attempt: the id of this attempt at ``partition`` (letters, digits and ``_``, at
            most 64): a retried or speculative task may pass its engine's attempt id, or
            leave the default, a fresh unique id. Attempts never touch each other's files;
            :func:`merge` keeps one. Rerunning the same attempt id replaces that attempt.
        progress: show a progress bar.
        storage_options: passed to fsspec (e.g. ``{"endpoint_url": ...}`` for S3).
        lists: names of columns whose values are 1-D numeric arrays of any length (e.g.
            the tokens of each document): stored as Arrow ``large_list`` of the first
            value's dtype, read back as one numpy array per record. Without it a numpy
            array fixes its column's shape. (Arrow input: lists of varying length are
            list columns already.)

    Returns:
        The manifest of the finished store, or of this partition's shards.

    Raises:
        StoreError: bad records; a finished store at ``dest`` without ``overwrite``;
            another build writing to ``dest`` now (the message names it).
    """
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise InvalidValueError(
            f"shard_size must be a positive whole number of bytes, got {shard_size!r}"
        )
    if partition is None and num_partitions is not None:
        raise InvalidValueError(
            f"pass partition and num_partitions together (got partition={partition}, num_partitions={num_partitions})"
        )
    if partition is not None and not 0 <= partition < (
        partition + 1 if num_partitions is None else num_partitions
    ):
        raise InvalidValueError(f"partition must be in [0, {num_partitions}), got {partition}")
    if attempt is not None and partition is None:
        raise InvalidValueError(
            f"attempt={attempt!r} names an attempt at a partition; pass partition too"
        )
    build = new_build_id() if attempt is None else str(attempt)
    list_names = frozenset([lists] if isinstance(lists, str) else map(str, lists))
    if not _ATTEMPT.match(build):
        raise InvalidValueError(
            f"attempt must be 1-64 letters, digits or '_' (it names files), got {attempt!r}"
        )
    meta = dict(metadata or {})
    try:
        json.dumps(meta)
    except TypeError as err:
        raise StoreError(f"metadata must be JSON-serialisable: {err}") from err
    local = os.fspath(dest)
    if "://" not in local and os.path.exists(local) and not os.path.isdir(local):
        raise StoreError(
            f"{local!r} is a file; a store is a directory: give a path that does not exist yet "
            f"or an existing store's directory"
        )
    if is_hf_dataset(records):  # numeric lists of varying length are list columns
        list_names |= hf_list_columns(records)
        records = hf_records(records)
    loc = locate(dest, **dict(storage_options or {}))
    if partition is not None:
        total = None if num_partitions is None else int(num_partitions)
        return _write_partition(
            records, loc, int(partition), total, build, meta, shard_size, progress, list_names
        )
    had_store = loc.exists(MANIFEST_NAME)
    if had_store and not overwrite:
        raise StoreError(
            f"{loc.url} already holds a finished store; pass overwrite=True (epochal build --overwrite) to replace it"
        )
    prefix = _shard_prefix(0, build)
    lease = Lease.take(loc, prefix, kind="write")
    try:
        columns, shards = _shards_or_nothing(
            records, loc, prefix, shard_size, progress, lease, list_names
        )
        if not shards:
            raise StoreError(f"no records to write to {loc.url}; a store needs at least one record")
        if not had_store and loc.exists(MANIFEST_NAME) and not overwrite:
            _remove_own(loc, prefix)
            raise StoreError(
                f"another build finished a store at {loc.url} while this one was writing; "
                f"pass overwrite=True to replace it"
            )
        manifest = _commit_shards(loc, columns, shards, meta, "rerun the build")
    finally:
        lease.release()
    _collect_garbage_after_commit(loc)
    return manifest


def _commit_shards(
    loc: Location,
    columns: tuple[Column, ...],
    shards: list[Shard],
    meta: dict[str, Any],
    rerun: str,
) -> Manifest:
    """Commit a store of ``shards``, once every one of them is present (else the error
    says to ``rerun``): the last step of a write and of a merge."""
    _check_present(loc, shards, rerun)
    manifest = Manifest(columns=columns, shards=tuple(shards), metadata=meta)
    _commit(loc, manifest)
    return manifest


def _shards_or_nothing(
    records: Iterable[Mapping[str, Any]],
    loc: Location,
    prefix: str,
    shard_size: int,
    progress: bool,
    lease: Lease,
    list_names: frozenset[str],
) -> tuple[tuple[Column, ...], list[Shard]]:
    """The build's shards under ``prefix``; on any failure none of them is left behind."""
    try:
        return _write_shards(
            records,
            loc,
            prefix,
            shard_size=shard_size,
            progress=progress,
            lease=lease,
            lists=list_names,
        )
    except BaseException:
        _remove_own(loc, prefix)
        raise


def _write_partition(
    records: Iterable[Mapping[str, Any]],
    loc: Location,
    index: int,
    total: int | None,
    attempt: str,
    meta: dict[str, Any],
    shard_size: int,
    progress: bool,
    list_names: frozenset[str] = frozenset(),
) -> Manifest:
    """One attempt at one partition: its own shards, then its record (last, atomically)."""
    prefix = _shard_prefix(index, attempt)
    lease = Lease.take(loc, prefix, kind="partition", partition=index)
    try:
        # a rerun of this very attempt id replaces it: its old record must not outlive it
        loc.remove(PARTITIONS_DIR, _record_name(index, attempt))
        _remove_own(loc, prefix)
        columns, shards = _shards_or_nothing(
            records, loc, prefix, shard_size, progress, lease, list_names
        )
        body = {
            "format": _PARTITION_FORMAT,
            "version": version_for(columns),
            "partition": index,
            "num_partitions": total,
            "attempt": attempt,
            "committed": time.time(),
            "columns": [c.to_json() for c in columns],
            "shards": [s.to_json() for s in shards],
            "metadata": meta,
        }
        loc.put(json.dumps(body, indent=1).encode(), PARTITIONS_DIR, _record_name(index, attempt))
    finally:
        lease.release()
    return Manifest(columns=columns, shards=tuple(shards), metadata=meta)


def merge(
    dest: str | os.PathLike[str],
    *,
    num_partitions: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Finish a parallel build: pick one finished attempt per partition, write the manifest.

    ``num_partitions`` is needed when the partitions were written without one (Ray).

    Of several finished attempts at one partition (retries, speculative copies) the first
    committed is kept (ties: the smallest attempt id), so the choice is deterministic for
    a given set of records. Shards are ordered by partition, then as each writer wrote
    them; the store's metadata is that of the first non-empty partition. Files of every
    other attempt, and of earlier builds, are removed afterwards, except those of attempts
    still running (they are removed by the next build).

    Raises:
        StoreError: when a partition has no finished attempt (the message lists them),
            partitions disagree on the schema or their count, or a record is damaged.
    """
    loc = locate(dest, **dict(storage_options or {}))
    lease = Lease.take(loc, f"merge-{new_build_id()}", kind="merge")
    try:
        chosen = _choose_attempts(loc, num_partitions)
        columns: tuple[Column, ...] = ()
        shards: list[Shard] = []
        meta: dict[str, Any] = {}
        for i in sorted(chosen):
            body = chosen[i]
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
        manifest = _commit_shards(loc, columns, shards, meta, "rerun those partitions")
    finally:
        lease.release()
    _collect_garbage_after_commit(loc)
    return manifest


def _choose_attempts(loc: Location, num_partitions: int | None) -> dict[int, dict[str, Any]]:
    """Partition -> the record of its chosen attempt; StoreError if any has none."""
    finished: dict[int, list[dict[str, Any]]] = {}
    fresh_listing(loc, PARTITIONS_DIR)
    for name in loc.listdir(PARTITIONS_DIR):
        if not name.endswith(".json") or name.startswith("."):
            continue
        where = f"partition record {PARTITIONS_DIR}/{name} of {loc.url}"
        try:
            body = json.loads(loc.read(PARTITIONS_DIR, name))
            ok = (
                isinstance(body, dict)
                and body.get("format") == _PARTITION_FORMAT
                and all(isinstance(body.get(k), list) for k in ("columns", "shards"))
            )
            index, total = body["partition"], body["num_partitions"]
            # a total of None: the engine passes it to merge (see write's num_partitions)
            ok = ok and all(
                isinstance(v, int) and not isinstance(v, bool)
                for v in (index, index + 1 if total is None else total)
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"{where} is damaged: {err!r}") from err
        if not ok or not 0 <= index < (index + 1 if total is None else total):
            raise StoreError(f"{where} is damaged: not an epochal partition record")
        body.setdefault("attempt", "")  # records of the single-attempt scheme
        body.setdefault("committed", 0.0)
        finished.setdefault(index, []).append(body)
    if not finished:
        raise StoreError(
            f"nothing to merge at {loc.url}: no partitions written (expected {PARTITIONS_DIR}/*.json)"
        )
    expected = {b["num_partitions"] for bodies in finished.values() for b in bodies} - {None}
    expected |= set() if num_partitions is None else {num_partitions}
    if not expected:
        raise StoreError(
            f"cannot merge {loc.url}: the partitions were written without num_partitions; pass it to merge"
        )
    if len(expected) != 1:
        raise StoreError(f"partitions at {loc.url} disagree on num_partitions: {sorted(expected)}")
    total = expected.pop()
    missing = sorted(set(range(total)) - set(finished))
    if missing:
        raise StoreError(
            f"cannot merge {loc.url}: partitions {missing} of {total} are not written yet "
            f"(no finished attempt)"
        )
    extra = sorted(set(finished) - set(range(total)))
    if extra:
        raise StoreError(
            f"cannot merge {loc.url}: partitions {extra} are beyond the {total} expected"
        )
    return {
        i: min(bodies, key=lambda b: (float(b["committed"]), str(b["attempt"])))
        for i, bodies in finished.items()
    }


def _check_present(loc: Location, shards: list[Shard], remedy: str) -> None:
    """Refuse to commit a manifest naming shards that are gone (on object storage, another
    build may have taken a lease that stopped beating for its own and collected them)."""
    fresh_listing(loc, SHARDS_DIR)
    present = set(loc.listdir(SHARDS_DIR))
    lost = [s.name for s in shards if s.name not in present]
    if lost:
        raise StoreError(
            f"cannot commit a store at {loc.url}: {len(lost)} of its shards vanished while it was "
            f"written (e.g. {lost[0]}); {remedy}"
        )


def _commit(loc: Location, manifest: Manifest) -> None:
    """Put the manifest in place: the one atomic step that makes (or replaces) the store."""
    loc.put(manifest.to_bytes(), MANIFEST_NAME)


def _collect_garbage_after_commit(loc: Location) -> None:
    """The store is committed: failing to tidy up must not make the write look failed
    (what is left is collected by the next build)."""
    with contextlib.suppress(OSError):
        _collect_garbage(loc)


def _collect_garbage(loc: Location) -> None:
    """Remove what neither the current manifest nor a live build needs.

    Leases are read before the manifest: a build that is not live any more has committed
    (or given up) before we look, so if it committed, the manifest we then read is its
    own or a newer one, and its shards are kept exactly when that manifest lists them.
    """
    live = live_leases(loc)
    try:
        current = Manifest.from_bytes(loc.read(MANIFEST_NAME), where=MANIFEST_NAME)
    except (OSError, StoreError):
        return  # no readable manifest: nothing can be called garbage with confidence
    keep = {s.name for s in current.shards}
    fresh_listing(loc, SHARDS_DIR)
    for name in loc.listdir(SHARDS_DIR):
        if name not in keep and shard_build(name) not in live:
            loc.remove(SHARDS_DIR, name)
    for name in loc.listdir(PARTITIONS_DIR):
        match = _RECORD.match(name)
        if not match or _shard_prefix(int(match.group(1)), match.group(2)) not in live:
            loc.remove(PARTITIONS_DIR, name)
    for name in loc.listdir(BUILDS_DIR):
        if name.endswith(".json") and name[: -len(".json")] not in live:
            loc.remove(BUILDS_DIR, name)


def _remove_own(loc: Location, prefix: str) -> None:
    """Remove this build's own shard files (it failed, or is being replaced)."""
    with contextlib.suppress(OSError):
        for name in loc.listdir(SHARDS_DIR):
            if shard_build(name) == prefix:
                loc.remove(SHARDS_DIR, name)


def _shard_prefix(partition: int, build: str) -> str:
    return f"part-{partition:05d}-{build}"


def _record_name(partition: int, attempt: str) -> str:
    return f"part-{partition:05d}-{attempt}.json"


def _write_shards(
    records: Iterable[Mapping[str, Any]],
    loc: Location,
    prefix: str,
    *,
    shard_size: int,
    progress: bool,
    lease: Lease,
    lists: frozenset[str] = frozenset(),
) -> tuple[tuple[Column, ...], list[Shard]]:
    if isinstance(records, Blocks):  # columnar batches from an engine or a build's workers

        def flush(cols: tuple[Column, ...], pending: list[Any], seq: int, n: int) -> Shard:
            shard = _flush(loc, cols, pending, prefix, seq, n)
            lease.renew()
            return shard

        return write_block_shards(records, flush, shard_size=shard_size, progress=progress)
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
            if not builders:
                columns = infer_columns(record, number, lists)
                builders = [ColumnBuilder(c) for c in columns]
                names = tuple(c.name for c in columns)
                name_set = set(names)
            check_record(record, number, names, name_set)
            for builder, name in zip(builders, names, strict=True):
                pending_bytes += builder.append(record[name], number)
            pending += 1
            if bar is not None:
                bar.update(1)
            if pending_bytes >= shard_size:
                shards.append(_flush(loc, columns, builders, prefix, len(shards), pending))
                lease.renew()
                pending = pending_bytes = 0
        if pending:
            shards.append(_flush(loc, columns, builders, prefix, len(shards), pending))
    finally:
        if bar is not None:
            bar.close()
    return columns, shards


def _flush(
    loc: Location,
    columns: tuple[Column, ...],
    builders: list[Any],
    prefix: str,
    seq: int,
    n: int,
) -> Shard:
    """Encode the pending records as one Arrow IPC file (one record batch) and store it.

    The file carries its position and the manifest's column entries as schema metadata,
    so a reader can tell a shard that a manifest edit moved, renamed or reshaped (see
    ``_reader``): those would otherwise read as plausible, wrong data.
    """
    name = f"{prefix}-{seq:06d}.arrow"
    schema = arrow_schema(columns).with_metadata(
        {
            SHARD_POSITION_KEY: shard_position(name),
            SHARD_COLUMNS_KEY: json.dumps([c.to_json() for c in columns]),
        }
    )
    batch = pa.record_batch([b.finish() for b in builders], schema=schema)

    def encode(sink: Any) -> None:
        with pa.ipc.new_file(sink, schema) as out:
            out.write_batch(batch)

    data = loc.put_encoded(encode, SHARDS_DIR, name)
    granule_records, granules_xxh3 = write_block_index(loc, name, data, columns, n)
    return Shard(
        name=name,
        records=n,
        bytes=data.size,
        xxh3=xxhash.xxh3_64_hexdigest(data),
        granule_records=granule_records,
        granules_xxh3=granules_xxh3,
    )
