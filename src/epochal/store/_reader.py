"""``open``: a store as a Source, memory-mapped shards, vectorised batch gathers.

What is checked, and when (every failure is a CorruptStoreError naming the shard):

- **On open** (once): the manifest parses, is an epochal manifest of a version this code
  reads, every field has a valid type and range (see ``_format``: shard names cannot leave
  the store, counts cannot overflow, dtypes and shapes are real ones), shards are in the
  order the writer made them, and it is self-consistent (record count and fingerprint
  match its shard list).
- **On first use of a shard, per process** (lazy, O(1) in the shard's data size apart
  from one pass over variable-size offsets; see :func:`check_shard`): the file exists, is
  a regular file and has the manifest's byte size; its Arrow footer and metadata parse;
  its schema is the manifest's; (version 2) it records the position and the column
  entries (dtype, shape) the manifest gives it; it holds one record batch of the
  manifest's record count; every buffer lies exactly where the file's own framing puts
  the body, back to back in schema order, with exactly the size the schema and record
  count imply; variable-size offsets start at 0, never decrease and end at the data
  size. So a truncated, missing, moved, foreign or structurally damaged shard is never
  read: one flipped bit anywhere in a shard's metadata is an error or harmless.
- **With ``verify=True``** (on open) or ``epochal verify``: every shard's full xxh3-64
  checksum, which also catches a flipped byte inside record data, and every value (UTF-8
  of str columns). Shards of remote stores are always checksummed as they are downloaded
  into the cache; ``verify=True`` rehashes cached copies and warns about a corrupt one
  (:class:`~epochal.store.StoreWarning`) before downloading it again. A str value that is
  not UTF-8 read without ``verify`` is a CorruptStoreError naming the shard and record.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from epochal._gather import AddressSpace, RecordLayout
from epochal.store._columns import ColumnView, arrow_schema, as_records
from epochal.store._errors import CorruptStoreError, StoreError, StoreWarning
from epochal.store._format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PARTITIONS_DIR,
    SHARD_COLUMNS_KEY,
    SHARD_POSITION_KEY,
    SHARDS_DIR,
    Column,
    Manifest,
    Shard,
    shard_position,
)
from epochal.store._fs import Location, locate
from epochal.store._remote import ShardCache, hash_file

__all__ = ["StoreSource", "check_shard", "open_store", "read_manifest"]

_MAGIC = b"ARROW1"


class _OpenShard:
    """One shard memory-mapped in this process, as column views."""

    def __init__(
        self,
        path: str,
        shard: Shard,
        columns: tuple[Column, ...],
        where: str,
        *,
        version: int = FORMAT_VERSION,
        full: bool = False,
    ) -> None:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise CorruptStoreError(f"shard {where} is missing") from None
        except OSError as err:
            raise CorruptStoreError(f"shard {where} cannot be read: {err}") from err
        if not stat.S_ISREG(info.st_mode):
            raise CorruptStoreError(
                f"shard {where} is not a regular file (a directory?); rebuild the store"
            )
        if info.st_size != shard.bytes:
            raise CorruptStoreError(
                f"shard {where} is truncated or damaged: {info.st_size} bytes, the manifest says {shard.bytes}"
            )
        try:
            self._map = pa.memory_map(path)
        except (pa.ArrowException, OSError) as err:
            raise CorruptStoreError(f"shard {where} cannot be mapped: {err}") from err
        batch = check_shard(self._map, shard, columns, where, version=version, full=full)
        self.views = [ColumnView(c, batch.column(i), shard=where) for i, c in enumerate(columns)]


def check_shard(
    source: pa.NativeFile,
    shard: Shard,
    columns: tuple[Column, ...],
    where: str,
    *,
    version: int = FORMAT_VERSION,
    full: bool = False,
) -> pa.RecordBatch:
    """The one record batch of a shard file, after every structural check.

    ``source`` holds exactly the file's bytes (a memory map, or a buffer of a downloaded
    file) and must read zero-copy: the checks compare where each Arrow buffer lies with
    where this writer puts it. ``full`` also checks every value (UTF-8 of str columns,
    every offset), which costs a pass over the data: ``verify`` does that.

    Raises:
        CorruptStoreError: naming the shard and what is wrong with it.
    """
    try:
        if source.read_at(6, 0) != _MAGIC:  # Arrow checks only the trailing magic
            raise CorruptStoreError(
                f"shard {where} is damaged: it does not start as an Arrow IPC file"
            )
        reader = pa.ipc.open_file(source)
        if not reader.schema.equals(arrow_schema(columns)):
            fields = ", ".join(f"{f.name}: {f.type}" for f in reader.schema)
            raise CorruptStoreError(f"shard {where} has schema ({fields}), not the manifest's")
        if version >= 2:
            _check_identity(reader.schema.metadata or {}, shard, columns, where)
        if reader.num_record_batches != 1:
            raise CorruptStoreError(
                f"shard {where} has {reader.num_record_batches} record batches, expected 1"
            )
        batch = reader.get_batch(0)
        if batch.num_rows != shard.records:
            raise CorruptStoreError(
                f"shard {where} has {batch.num_rows} records, the manifest says {shard.records}"
            )
        batch.validate(full=full)
        _check_buffers(source, batch, columns, where)
    except (pa.ArrowException, OSError, ValueError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CorruptStoreError(f"shard {where} is damaged: {first_line}") from err
    return batch


def _check_identity(
    metadata: Mapping[bytes, bytes], shard: Shard, columns: tuple[Column, ...], where: str
) -> None:
    """A version-2 shard records its position and columns: a manifest edit that renames,
    moves or reshapes a shard (same Arrow type, other meaning: shape (4, 4) -> (2, 8))
    shows here."""
    own = metadata.get(SHARD_POSITION_KEY, b"").decode("utf-8", "replace")
    if own != shard_position(shard.name):
        raise CorruptStoreError(
            f"shard {where} is a different shard (written as {own or 'unknown'!r}): the manifest's "
            f"shard list was edited or the files were moved"
        )
    try:
        recorded = [Column.from_json(c) for c in json.loads(metadata.get(SHARD_COLUMNS_KEY, b""))]
    except (ValueError, TypeError, RecursionError):
        recorded = None
    if recorded != list(columns):
        described = "unreadable" if recorded is None else [c.describe() for c in recorded]
        raise CorruptStoreError(
            f"shard {where} was written with columns {described}, the manifest says "
            f"{[c.describe() for c in columns]}"
        )


def _expected_sizes(column: Column, array: pa.Array) -> list[int | None]:
    """Byte sizes of an array's buffers (``array.buffers()`` order) as this writer writes
    them; None for validity buffers (no nulls: Arrow does not keep them)."""
    n = len(array)
    if column.kind in ("bytes", "str"):
        offsets = array.buffers()[1]
        end = 0
        if offsets is not None and offsets.size >= (n + 1) * 8:
            end = int(np.frombuffer(offsets, dtype=np.int64, count=n + 1)[-1])
        return [None, (n + 1) * 8, end]
    if column.kind == "scalar" and column.numpy_dtype.kind == "b":
        return [None, (n + 7) // 8]
    if pa.types.is_fixed_size_list(array.type):
        return [None, None, n * column.itemsize]
    return [None, n * column.itemsize]


def _check_buffers(
    source: pa.NativeFile, batch: pa.RecordBatch, columns: tuple[Column, ...], where: str
) -> None:
    """Every buffer lies where the Arrow file's own framing says the body is, back to back
    in schema order (each padded to 8 bytes), with exactly the size the schema and record
    count imply. One flipped bit in a buffer's offset or length, in the message lengths
    or the footer's block, breaks one of these; unchecked, it would read another part of
    the file as the column (a real case: an offset moved by 128 bytes)."""
    size = source.size()
    source.seek(0)
    base = source.read_buffer(8).address  # zero-copy: where the file's bytes are
    # the file: magic (8), schema message, record batch message, body, EOS (8), footer,
    # footer length (4), magic (6); each message is a -1 marker and a length, then that many
    (footer_len,) = np.frombuffer(source.read_at(4, size - 10), dtype="<i4").tolist()
    schema_len = int(np.frombuffer(source.read_at(8, 8), dtype="<i4")[1])
    batch_at = 16 + schema_len
    if not 0 <= batch_at <= size - 8:
        raise CorruptStoreError(f"shard {where} is damaged: bad schema message length")
    marker, batch_len = np.frombuffer(source.read_at(8, batch_at), dtype="<i4").tolist()
    position = batch_at + 8 + batch_len
    if marker != -1 or not batch_at < position <= size:
        raise CorruptStoreError(f"shard {where} is damaged: bad record batch message framing")
    for column, array in zip(columns, batch.columns, strict=True):
        buffers = array.buffers()
        sizes = _expected_sizes(column, array)
        if len(buffers) != len(sizes):
            raise CorruptStoreError(
                f"shard {where}: column {column.name!r} has {len(buffers)} buffers, expected {len(sizes)}"
            )
        for buffer, expected in zip(buffers, sizes, strict=True):
            if expected is None:
                if buffer is not None:
                    raise CorruptStoreError(
                        f"shard {where}: column {column.name!r} has a validity buffer (nulls?)"
                    )
                continue
            got = 0 if buffer is None else buffer.size
            if got != expected:
                raise CorruptStoreError(
                    f"shard {where}: column {column.name!r} has a buffer of {got} bytes, its "
                    f"records need {expected}"
                )
            if expected == 0:
                continue
            assert buffer is not None
            if buffer.address - base != position:
                raise CorruptStoreError(
                    f"shard {where}: column {column.name!r} has a buffer at byte "
                    f"{buffer.address - base} of the file, expected {position}"
                )
            position += -(-expected // 8) * 8
    if position + 8 != size - 10 - footer_len:
        raise CorruptStoreError(
            f"shard {where} is damaged: its buffers end at byte {position}, the body at "
            f"{size - 18 - footer_len}"
        )


class _Layout(NamedTuple):
    """Where this process's open shards are: one address space, offsets into it by shard."""

    space: AddressSpace
    first: list[np.ndarray]  # per column, by shard: offset of rows (fixed) or offsets (bytes/str)
    data: list[np.ndarray]  # per column, by shard: offset of the data buffer (bytes/str)


class StoreSource:
    """A store opened for reading: a deterministic, fork-safe Source.

    Shards are opened (memory-mapped, or fetched into the cache first) on first use in each
    process, so a source created before ``fork`` or pickled into a DataLoader worker opens
    its own maps there. ``get_columns`` gathers a batch with one vectorised gather per
    column per shard touched; fixed-size columns come back as numpy arrays, bytes/str
    columns as lists.

    Attributes:
        manifest: the store's :class:`Manifest` (schema, shards, metadata).
        url: where the store lives.
    """

    deterministic = True

    @property
    def fast_gather(self) -> bool:
        """A local store's batches are memory gathers: the Loader reads them in-process.

        Remote stores fetch shards on first use, so their reads stay in the workers.
        """
        return self._cache is None

    def __init__(
        self, loc: Location, manifest: Manifest, *, cache: ShardCache | None = None
    ) -> None:
        self._loc = loc
        self.manifest = manifest
        self.url = loc.url
        self._cache = cache
        self._starts = np.cumsum([0, *(s.records for s in manifest.shards)], dtype=np.int64)
        self._n = int(self._starts[-1])
        self._pid = -1
        self._open: dict[int, _OpenShard] = {}
        self._layout: _Layout | None = None
        self._reset_after_fork()

    # -- Source protocol -------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        if not 0 <= i < self._n:
            raise IndexError(
                f"record index {index} is out of range for a store of {self._n} records"
            )
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        shard = self._shard(k)
        local = i - int(self._starts[k])
        try:
            return {
                c.name: view.get(local)
                for c, view in zip(self.manifest.columns, shard.views, strict=True)
            }
        except UnicodeDecodeError:
            raise self._bad_text(np.array([i])) from None

    def get_columns(self, indices: np.ndarray) -> dict[str, np.ndarray | list[Any]]:
        """Records ``indices`` as columns: numpy arrays (first axis = batch) or lists.

        One vectorised gather per column over every shard the batch touches (see
        ``_gather``); bytes/str columns locate all records from the offsets buffers in one
        gather too, then copy each record's bytes out.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            views = self._shard(0).views
            return {
                c.name: as_records(c, v.rows[:0]) if v.rows is not None else []
                for c, v in zip(self.columns, views, strict=True)
            }
        # one check for both ends: negative indices wrap around to huge unsigned values
        if int(idx.view(np.uint64).max()) >= self._n:
            bad = idx[(idx < 0) | (idx >= self._n)][0]
            raise IndexError(f"record index {bad} is out of range for a store of {self._n} records")
        sid, local, layout = self._locate(idx)
        space = layout.space
        out: dict[str, np.ndarray | list[Any]] = {}
        for j, column in enumerate(self.columns):
            if column.kind in ("bytes", "str"):
                ends = (
                    space.items(16)[layout.first[j][sid] + local * 8].view(np.int64).reshape(-1, 2)
                )
                ends += layout.data[j][sid][..., None]
                memory = space.memory
                starts, stops = ends[:, 0].tolist(), ends[:, 1].tolist()
                if column.kind == "str":
                    try:
                        out[column.name] = [
                            str(memory[a:b], "utf-8") for a, b in zip(starts, stops, strict=True)
                        ]
                    except UnicodeDecodeError:
                        raise self._bad_text(idx) from None
                else:
                    out[column.name] = [
                        bytes(memory[a:b]) for a, b in zip(starts, stops, strict=True)
                    ]
            else:
                itemsize = column.itemsize
                items = space.items(itemsize)[layout.first[j][sid] + local * itemsize]
                out[column.name] = as_records(column, items)
        return out

    def _locate(self, idx: np.ndarray) -> tuple[np.ndarray | int, np.ndarray, _Layout]:
        """Shard and index within it of each in-range index, with the shards mapped."""
        self._reset_after_fork()
        if len(self._starts) == 2:  # one shard
            if not self._open:
                self._shard(0)
            return 0, idx, self._layout or self._build_layout()
        sid = np.searchsorted(self._starts, idx, side="right") - 1
        local = idx - self._starts[sid]
        if len(self._open) < len(self.manifest.shards):
            for k in set(np.unique(sid).tolist()) - self._open.keys():
                self._shard(k)
        return sid, local, self._layout or self._build_layout()

    def _record_layout(self) -> tuple[RecordLayout, ...] | None:
        """Fixed-size columns' layouts, for gathers across sources (see ``sources/_joined``).

        None for variable-size columns, and for remote stores, whose shards are fetched
        only when a batch needs them (the joined gather maps every shard up front).
        """
        if self._cache is not None or any(c.kind in ("bytes", "str") for c in self.columns):
            return None
        return tuple(RecordLayout(c.name, c.itemsize, c.numpy_dtype, c.shape) for c in self.columns)

    def _address_table(self) -> tuple[np.ndarray, list[np.ndarray], list[tuple[int, int]]]:
        """Every shard mapped, as pieces of memory (see ``sources/_joined``)."""
        for k in range(len(self.manifest.shards)):
            self._shard(k)
        layout = self._layout or self._build_layout()
        bases = [first + layout.space.lo for first in layout.first]
        regions = [r for s in self._open.values() for v in s.views for r in v.regions()]
        return self._starts, bases, regions

    def get_many(self, indices: np.ndarray) -> list[dict[str, Any]]:
        """Records ``indices`` as dicts, gathered per column first."""
        cols = self.get_columns(indices)
        names = list(cols)
        return [{name: cols[name][j] for name in names} for j in range(len(indices))]

    @property
    def fingerprint(self) -> str:
        """The manifest's fingerprint: a hash of the schema and every shard's checksum."""
        return self.manifest.fingerprint

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.manifest.columns

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest.metadata

    def verify(self) -> None:
        """Check every shard's size and full xxh3-64 checksum, then its structure and values.

        For a remote store the cached copies are checked: a corrupt one is reported with a
        :class:`~epochal.store.StoreWarning` naming the shard, and downloaded again.
        """
        for k, shard in enumerate(self.manifest.shards):
            where = self._where(shard)
            if self._cache is not None:
                _drop_corrupt_cached(self._cache, shard, where)
                self._cache.fetch(shard)
            else:
                try:
                    got = hash_file(self._loc.path(SHARDS_DIR, shard.name))
                except FileNotFoundError:
                    raise CorruptStoreError(f"shard {where} is missing") from None
                except OSError as err:
                    raise CorruptStoreError(
                        f"shard {where} cannot be read: {err}; rebuild the store"
                    ) from err
                if got != (shard.bytes, shard.xxh3):
                    raise CorruptStoreError(
                        f"shard {where} is corrupt: {got[0]} bytes with xxh3 {got[1]}, the manifest says "
                        f"{shard.bytes} bytes with xxh3 {shard.xxh3}"
                    )
            self._open.pop(k, None)
            self._shard(k, full=True)

    # -- internals ---------------------------------------------------------------------------

    def _bad_text(self, idx: np.ndarray) -> CorruptStoreError:
        """The error for a str column holding bytes that are not UTF-8, naming the shard."""
        for i, column in ((i, c) for i in idx.tolist() for c in self.columns if c.kind == "str"):
            k = int(np.searchsorted(self._starts, i, side="right")) - 1
            view = self._shard(k).views[self.columns.index(column)]
            try:
                view.get(i - int(self._starts[k]))
            except UnicodeDecodeError as err:
                return CorruptStoreError(
                    f"shard {self._where(self.manifest.shards[k])}: column {column.name!r} of record "
                    f"{i} is not valid UTF-8 ({err.reason} at byte {err.start}); the shard is "
                    f"corrupt: run epochal verify, rebuild the store"
                )
        return CorruptStoreError(f"store {self.url}: a str column is not valid UTF-8")

    def _where(self, shard: Shard) -> str:
        return f"{SHARDS_DIR}/{shard.name} of store {self.url}"

    def _reset_after_fork(self) -> None:
        """Per-process state: a forked or unpickled copy maps its own shards."""
        if self._pid != os.getpid():
            self._open = {}
            self._layout = None
            self._pid = os.getpid()

    def _shard(self, k: int, *, full: bool = False) -> _OpenShard:
        self._reset_after_fork()
        opened = self._open.get(k)
        if opened is not None:
            return opened
        shard = self.manifest.shards[k]
        version = self.manifest.version
        if self._cache is None:
            opened = _OpenShard(
                self._loc.path(SHARDS_DIR, shard.name),
                shard,
                self.columns,
                self._where(shard),
                version=version,
                full=full,
            )
        else:
            path = self._cache.fetch(shard)
            try:
                opened = _OpenShard(
                    path, shard, self.columns, self._where(shard), version=version, full=full
                )
            except CorruptStoreError:
                if os.path.exists(path):
                    raise
                # evicted by another process between fetch and map: fetch it again
                opened = _OpenShard(
                    self._cache.fetch(shard),
                    shard,
                    self.columns,
                    self._where(shard),
                    version=version,
                    full=full,
                )
        self._open[k] = opened
        self._layout = None
        return opened

    def _build_layout(self) -> _Layout:
        regions = {k: [v.regions() for v in s.views] for k, s in self._open.items()}
        space = AddressSpace(r for per_column in regions.values() for rs in per_column for r in rs)
        n = len(self.manifest.shards)
        first = [np.zeros(n, dtype=np.int64) for _ in self.columns]
        data = [np.zeros(n, dtype=np.int64) for _ in self.columns]
        for k, per_column in regions.items():
            for j, rs in enumerate(per_column):
                first[j][k] = rs[0][0] - space.lo
                if len(rs) > 1:
                    data[j][k] = rs[1][0] - space.lo
        self._layout = _Layout(space, first, data)
        return self._layout

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_open", "_layout"):
            state.pop(name, None)
        state["_pid"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_after_fork()

    def __repr__(self) -> str:
        cols = ", ".join(f"{c.name}={c.describe()}" for c in self.columns)
        return f"StoreSource({self.url!r}, n={self._n}, shards={len(self.manifest.shards)}, {cols})"


def _drop_corrupt_cached(cache: ShardCache, shard: Shard, where: str) -> None:
    """Hash the cached copy of ``shard``, if any; warn about and remove it when it is corrupt,
    so that the fetch that follows downloads it again."""
    path = cache.local_path(shard)
    try:
        got = hash_file(path)
    except FileNotFoundError:
        return
    except OSError as err:
        got = (-1, f"unreadable ({err})")
    if got == (shard.bytes, shard.xxh3):
        return
    warnings.warn(
        f"the cached copy {path} of shard {where} is corrupt ({got[0]} bytes with xxh3 {got[1]}, "
        f"the manifest says {shard.bytes} bytes with xxh3 {shard.xxh3}); downloading it again",
        StoreWarning,
        stacklevel=3,
    )
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        os.unlink(path)


def read_manifest(loc: Location) -> Manifest:
    """The manifest of the store at ``loc``; StoreError when there is no finished store."""
    where = loc.path(MANIFEST_NAME) if loc.is_local else f"{loc.url.rstrip('/')}/{MANIFEST_NAME}"
    try:
        raw = loc.read(MANIFEST_NAME)
    except FileNotFoundError:
        if loc.listdir(SHARDS_DIR) or loc.listdir(PARTITIONS_DIR):
            raise StoreError(
                f"{loc.url} holds an unfinished build (shards but no {MANIFEST_NAME}): rerun the build to "
                f"complete it, or merge() a parallel build"
            ) from None
        raise StoreError(f"no store at {loc.url}: {MANIFEST_NAME} not found") from None
    except (IsADirectoryError, PermissionError, OSError) as err:
        raise StoreError(f"cannot read {where}: {err}") from err
    return Manifest.from_bytes(raw, where=where)


def open_store(
    url: str | os.PathLike[str],
    *,
    verify: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_size: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> StoreSource:
    """Open the store at ``url`` (a local path or any fsspec URL) as a Source.

    Args:
        url: e.g. ``"data/shapes"``, ``"file:///data/shapes"``, ``"s3://bucket/shapes"``.
        verify: check every shard's xxh3-64 checksum now (reads the whole store); without
            it shards get the structural checks listed in this module's docstring.
        cache_dir: where shards of remote stores are cached (default ``$EPOCHAL_CACHE`` or
            ``~/.cache/epochal/stores``).
        cache_size: bound on the cache's bytes; least-recently-used shards are evicted.
        storage_options: passed to fsspec (e.g. ``{"endpoint_url": ...}`` for S3).

    Returns:
        A :class:`StoreSource`.
    """
    loc = locate(url, **dict(storage_options or {}))
    manifest = read_manifest(loc)
    cache = None
    if not loc.is_local:
        cache = ShardCache(
            loc, cache_dir=None if cache_dir is None else os.fspath(cache_dir), max_bytes=cache_size
        )
    source = StoreSource(loc, manifest, cache=cache)
    if verify:
        source.verify()
    return source
