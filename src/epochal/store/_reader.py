"""``open``: a store as a Source, memory-mapped shards, vectorised batch gathers.

What is checked, and when (every failure is a CorruptStoreError naming the shard):

- **On open** (once): the manifest parses, is an epochal manifest of a version this code
  reads, every field has a valid type and range (see ``_format``: shard names cannot leave
  the store, counts cannot overflow, dtypes and shapes are real ones), shards are in the
  order the writer made them, and it is self-consistent (record count and fingerprint
  match its shard list).
- **On first use of a shard, per process** (lazy, O(1) in the shard's data size apart
  from one pass over variable-size offsets; see :func:`check_shard`): the file exists, is
  a regular file and has the manifest's byte size (here), then (see ``_checks``) its
  Arrow footer and metadata parse;
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

import os
import stat
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from epochal._errors import OutOfRangeError
from epochal._gather import AddressSpace, RecordLayout
from epochal.store._blocks import ShardHead, _Col
from epochal.store._checks import check_shard
from epochal.store._columns import ColumnView, as_records
from epochal.store._errors import CorruptStoreError, StoreError
from epochal.store._format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    PARTITIONS_DIR,
    SHARDS_DIR,
    Column,
    Manifest,
    Shard,
)
from epochal.store._fs import Location, locate
from epochal.store._remote import ShardCache, hash_file

__all__ = ["StoreSource", "open_store", "read_manifest"]


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


class _Layout(NamedTuple):
    """Where this process's open shards are: one address space, offsets into it by shard."""

    space: AddressSpace
    first: list[np.ndarray]  # per column, by shard: offset of rows (fixed) or offsets (bytes/str)
    data: list[np.ndarray]  # per column, by shard: offset of the data buffer (bytes/str)


class _FixedPlan(NamedTuple):
    """How to gather a batch of a store whose columns are all fixed-size and whose shards
    are all mapped in this process: one search, two array operations for every column's
    addresses together, then one gather by address per column."""

    # uint64 shard starts, the record count last: searchsorted(side="right") of an index
    # viewed as uint64 is its shard + 1 when it is in range, len(starts) otherwise (a
    # negative index views as a huge one), which no column of ``shifts`` has
    starts: np.ndarray
    # int64 (columns, len(starts)), by shard + 1: the item of the shard's record 0 in the
    # address space minus its first global index * itemsize (column 0 is never read)
    shifts: np.ndarray
    itemsizes: np.ndarray  # int64 (columns, 1): each column's record size
    # per column: its name, the address space's items of its record size, and the dtype
    # one item reads as (a sub-array dtype for array columns: the view has the batch shape)
    columns: tuple[tuple[str, np.ndarray, np.dtype], ...]


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
        # fixed-size columns only, every shard mapped in this process: the per-batch path
        self._fixed: _FixedPlan | None = None
        self._reset_after_fork()

    # -- Source protocol -------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        if not 0 <= i < self._n:
            raise OutOfRangeError(
                f"record index {index} is out of range for a store of {self._n} records"
            )
        if self._cache is not None:
            cols = self._cache.gather(np.array([i], dtype=np.int64), self._starts)
            return {name: col[0] for name, col in cols.items()}
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
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            idx = idx.reshape(-1)
        fixed = self._fixed
        if fixed is not None and self._pid == os.getpid():
            return self._gather_fixed(idx, fixed)
        # one check for both ends: negative indices wrap around to huge unsigned values
        if idx.size and int(idx.view(np.uint64).max()) >= self._n:
            raise self._out_of_range(idx)
        if self._cache is not None:  # remote: read from the cached units, nothing mapped
            return self._cache.gather(idx, self._starts)
        if idx.size == 0:
            views = self._shard(0).views
            return {
                c.name: as_records(c, v.rows[:0]) if v.rows is not None else []
                for c, v in zip(self.columns, views, strict=True)
            }
        sid, local, layout = self._locate(idx)
        space = layout.space
        out: dict[str, np.ndarray | list[Any]] = {}
        for j, column in enumerate(self.columns):
            if column.kind in ("bytes", "str", "list"):
                ends = (
                    space.items(16)[layout.first[j][sid] + local * 8].view(np.int64).reshape(-1, 2)
                )
                if column.kind == "list":  # offsets count elements
                    ends *= column.itemsize
                ends += layout.data[j][sid][..., None]
                memory = space.memory
                starts, stops = ends[:, 0].tolist(), ends[:, 1].tolist()
                if column.kind == "list":
                    dtype = column.numpy_dtype
                    out[column.name] = [
                        np.frombuffer(memory[a:b], dtype=dtype).copy()
                        for a, b in zip(starts, stops, strict=True)
                    ]
                elif column.kind == "str":
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

    def _gather_fixed(self, idx: np.ndarray, plan: _FixedPlan) -> dict[str, np.ndarray | list[Any]]:
        """The batch path of a store of fixed-size columns, all mapped: a search, a gather
        of the shifts, a multiply-add for every column at once and one gather by address
        per column (its view as the column's dtype and shape is free). Every index is
        checked by the shifts' gather: out of range, it finds no column there."""
        sid = plan.starts.searchsorted(idx.view(np.uint64), side="right")
        try:  # take: a fancy-index with a slice costs three times as much
            address = plan.shifts.take(sid, axis=1)
        except IndexError:
            raise self._out_of_range(idx) from None
        address += idx * plan.itemsizes
        return {
            name: items[where].view(dtype)
            for (name, items, dtype), where in zip(plan.columns, address)
        }

    def _out_of_range(self, idx: np.ndarray) -> OutOfRangeError:
        bad = idx[(idx < 0) | (idx >= self._n)][0]
        return OutOfRangeError(
            f"record index {bad} is out of range for a store of {self._n} records"
        )

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
        if self._cache is not None or any(c.kind in ("bytes", "str", "list") for c in self.columns):
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

    def _list_pieces(self, name: str) -> tuple[list[np.ndarray], np.ndarray]:
        """A list column as pieces of its elements laid end to end, and record offsets.

        Local stores: one piece per shard, a zero-copy view of its map (every shard is
        mapped). Remote stores: one piece, read through the cache into memory. The
        offsets (int64, ``len(self) + 1``) locate each record in the pieces' concatenation.
        """
        j = next((j for j, c in enumerate(self.columns) if c.name == name), None)
        if j is None or self.columns[j].kind != "list":
            raise StoreError(f"store {self.url} has no list column {name!r}")
        if self._cache is not None:
            chunks = [
                self.get_columns(np.arange(a, min(a + 4096, self._n)))[name]
                for a in range(0, self._n, 4096)
            ]
            values = [v for chunk in chunks for v in chunk]
            lengths = np.array([len(v) for v in values], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            return [np.concatenate(values)], offsets
        views = [self._shard(k).views[j] for k in range(len(self.manifest.shards))]
        pieces = [v.flat() for v in views]
        ends = np.cumsum([0, *(len(p) for p in pieces)], dtype=np.int64)
        parts = [v.offsets[:-1] + ends[k] for k, v in enumerate(views) if v.offsets is not None]
        return pieces, np.concatenate([*parts, ends[-1:]]).astype(np.int64)

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

        Remote stores: the cached units on this machine are checked first (a corrupt one is
        reported with a :class:`~epochal.store.StoreWarning` naming the shard and removed, so
        the next read downloads it again), then every shard is hashed straight from the
        bucket, with its granule index and head.
        """
        if self._cache is not None:
            self._cache.check_cached()
            for k in range(len(self.manifest.shards)):
                self._cache.verify_shard(k)
            return
        for k, shard in enumerate(self.manifest.shards):
            where = self._where(shard)
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

    # -- windowed reading (object storage larger than the cache) ---------------------------

    def read_hint(self) -> Any:
        """What a windowed order needs to know, or None when the plain global order is fine.

        None for local stores and for remote stores whose units all fit the cache; else
        a ``ReadHint`` (see ``epochal._windows``) with the mean stored bytes per record,
        the cache bound and the smallest record range fetched and verified as one unit
        (a granule; a whole shard for stores written without granule indexes).
        """
        cache = self._cache
        if cache is None or cache.store_bytes_on_disk() <= cache.max_bytes:
            return None
        from epochal._windows import ReadHint

        # bytes a record takes in the cache, not in the store: each unit is rounded up to
        # whole 4 KiB pages, a third more for 12 KiB granules, so windows sized from the
        # store's bytes do not fit three to the cache and evict each other
        # the heads stay cached all epoch (every window reads blocks of every shard): they
        # are not window room. Counting them per record instead left three windows ~2 MB
        # (2.5%) over a 77 MB cache, so the tail of each prefetched window found no room
        # and was fetched on demand when its window began (the loop waited on it)
        heads = cache.heads_bytes_on_disk()
        return ReadHint(
            record_bytes=(cache.store_bytes_on_disk() - heads) / max(self._n, 1),
            cache_bytes=cache.max_bytes,
            min_block_records=cache.min_block_records,
            reserved_bytes=heads,
        )

    def segment_starts(self) -> np.ndarray:
        """Record starts of the shards and the record count last: a remote store's fetch
        units (granules) restart at every shard, so a windowed order aligns its blocks to
        them (each granule is then read in one window, downloaded once per epoch)."""
        return self._starts.copy()

    def schedule(self, ranges: np.ndarray, *, window: int) -> None:
        """Fetch the record ranges ``ranges`` (int64 ``(k, 2)``, [start, stop)) that this
        rank reads in ``window`` ahead, on a thread pool; returns at once. Local: no-op."""
        if self._cache is not None:
            self._cache.schedule(ranges, self._starts, window=window)

    def retire(self, *, window: int) -> None:
        """Every range scheduled for windows <= ``window`` may be evicted from now on."""
        if self._cache is not None:
            self._cache.retire(window=window)

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
            self._fixed = None
            self._pid = os.getpid()

    def _shard(self, k: int, *, full: bool = False) -> _OpenShard:
        self._reset_after_fork()
        opened = self._open.get(k)
        if opened is not None:
            return opened
        shard = self.manifest.shards[k]
        # remote stores never get here: their reads go through the cache (see get_columns)
        assert self._cache is None, "remote shards are read from the cache, not mapped"
        opened = _OpenShard(
            self._loc.path(SHARDS_DIR, shard.name),
            shard,
            self.columns,
            self._where(shard),
            version=self.manifest.version,
            full=full,
        )
        self._open[k] = opened
        self._layout = None
        self._fixed = None
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
        self._fixed = self._fixed_gathers(self._layout)
        return self._layout

    def _fixed_gathers(self, layout: _Layout) -> _FixedPlan | None:
        """The fixed-size batch path, once every shard is mapped (else None: the general
        path maps the shards a batch needs first); None with any variable-size (bytes/str/list) column."""
        if self._cache is not None or any(c.variable for c in self.columns):
            return None
        # a batch never reads an empty shard, so it is never mapped
        needed = [k for k, shard in enumerate(self.manifest.shards) if shard.records]
        if not needed or any(k not in self._open for k in needed):
            return None
        shifts = np.zeros((len(self.columns), len(self._starts)), dtype=np.int64)
        columns = []
        for j, column in enumerate(self.columns):
            itemsize = column.itemsize
            shifts[j, 1:] = layout.first[j] - self._starts[:-1] * itemsize
            items = layout.space.items(itemsize)
            dtype = column.numpy_dtype
            if column.kind != "scalar":
                dtype = np.dtype((dtype, column.shape))
            columns.append((column.name, items, dtype))
        itemsizes = np.array([[c.itemsize] for c in self.columns], dtype=np.int64)
        return _FixedPlan(self._starts.astype(np.uint64), shifts, itemsizes, tuple(columns))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_open", "_layout", "_fixed"):
            state.pop(name, None)
        state["_pid"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_after_fork()

    def __repr__(self) -> str:
        cols = ", ".join(f"{c.name}={c.describe()}" for c in self.columns)
        return f"StoreSource({self.url!r}, n={self._n}, shards={len(self.manifest.shards)}, {cols})"


def shard_head_of_file(
    path: str, shard: Shard, columns: tuple[Column, ...], where: str
) -> ShardHead:
    """A whole cached shard's buffer positions, offsets and bits, checked like a local shard.

    The file is mapped only for the checks and unmapped before returning, so the cache
    can evict it without leaving its blocks held by this process.
    """
    opened = _OpenShard(path, shard, columns, where)
    try:
        opened._map.seek(0)
        base = opened._map.read_buffer(1).address  # a zero-copy slice: where the map starts
        cols: list[_Col] = []
        for column, view in zip(columns, opened.views, strict=True):
            if view.offsets is not None:
                assert view.data is not None
                pos = view.data.ctypes.data - base if int(view.offsets[-1]) else 0
                cols.append(_Col("var", pos, 0, offsets=view.offsets * view.scale))
            elif column.kind == "scalar" and column.numpy_dtype.kind == "b":
                assert view.rows is not None
                cols.append(_Col("bits", 0, 0, bits=np.asarray(view.rows, dtype=bool).copy()))
            else:
                assert view.rows is not None
                cols.append(_Col("rows", view.rows.ctypes.data - base, column.itemsize))
    finally:
        opened.views = []
        opened._map.close()
    return ShardHead(
        cols, records=shard.records, granule_records=max(shard.records, 1), granules=None
    )


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
            loc,
            manifest,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            max_bytes=cache_size,
        )
    source = StoreSource(loc, manifest, cache=cache)
    if verify:
        source.verify()
    return source
