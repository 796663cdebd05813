"""The local cache for stores on object storage (any non-local fsspec URL).

Units of a store are fetched on first use (or ahead, by :meth:`ShardCache.schedule`) into
``<cache_dir>/<hash of the store URL>/`` and read from there with ``pread``; nothing is
memory-mapped and every file is closed as soon as a batch is read from it. A unit is one
granule of a shard (a few records, fetched with one byte-range request per large column,
small fixed-size columns coming whole with the shard's head, and checked against the
writer's per-granule xxh3, see ``_blocks``) or, for stores written without granule
sidecars, a whole shard (checked against the manifest's xxh3).

:class:`ShardCache` is one class in four modules, one concern each: this one fetches and
checks (heads, granules, whole shards); ``_cache_files`` owns the folder (names, locks,
the disk bound, eviction, shared schedules); ``_cache_prefetch`` schedules windows and
fetches runs concurrently; ``_cache_reads`` reads batches from the cached units.

Guarantees:

- **Verified**: a unit is written to the cache only when its bytes match its digest;
  otherwise a CorruptStoreError names the shard. Later uses check the file's size only.
- **A disk bound**: every byte the cache writes is first made room for, under one lock of
  the store's folder, so the folder's real allocation (``st_blocks``) never exceeds
  ``max_bytes`` (a whole shard being downloaded is reserved at full size with
  ``posix_fallocate`` first). Since no process keeps a unit mapped or open beyond one
  batch, an evicted file frees its blocks at once: files deleted but held do not pile up.
- **Eviction order**: units that no live process has scheduled (oldest use first), then
  granule indexes and heads, then units scheduled for a later window than the one being
  stored (furthest in the future first). Units of a process's current window are never
  evicted; when they alone do not fit, the read fails with an error that says the
  minimum ``cache_size``. Schedules are shared through ``.pins-<pid>.npy`` files.
- **Own files only**: eviction looks only in the store's own folder and only at names this
  module makes (``b-<xxh3>-<granule>.unit``, ``s-<xxh3>.arrow``, ``i-``/``h-`` files and
  their temporaries); manifest fields that reach a path are checked first (plain shard
  names, 16-hex-digit digests), see ``_blocks.check_path_fields``.
- **No double download**: a fetcher holds the unit's lock (``fcntl.flock`` on one of a
  fixed set of lock files) and rechecks before fetching, in every process and thread.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import uuid
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import xxhash

from epochal._errors import InvalidValueError
from epochal.store._blocks import (
    BLOCKS_DIR,
    ShardHead,
    check_path_fields,
    head_ranges,
    index_name,
    parse_head,
    parse_index,
)
from epochal.store._cache_files import CacheTooSmallError, _alloc, _NoRoom
from epochal.store._cache_prefetch import coalesces
from epochal.store._cache_reads import CachedReads
from epochal.store._errors import CorruptStoreError, StoreWarning
from epochal.store._format import SHARDS_DIR, Column, Manifest
from epochal.store._fs import Location

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "CacheTooSmallError",
    "ShardCache",
    "default_cache_dir",
    "hash_file",
]

DEFAULT_CACHE_SIZE = 64 << 30  # bytes; override with cache_size= or EPOCHAL_CACHE_SIZE
_CHUNK = 8 << 20
_MERGE_GAP = 16 << 10  # byte ranges of one shard closer than this are one request


def default_cache_dir() -> str:
    """``$EPOCHAL_CACHE``, else ``~/.cache/epochal/stores``."""
    return os.environ.get("EPOCHAL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "epochal", "stores"
    )


def hash_file(path: str) -> tuple[int, str]:
    """Size and xxh3-64 hex digest of a local file."""
    digest = xxhash.xxh3_64()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


class _ProcessState:
    """What a cache holds per process: heads, the prefetch pool, this process's schedule."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.heads: dict[int, ShardHead] = {}
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None  # prefetch of scheduled windows
        self.demand: ThreadPoolExecutor | None = None  # misses of the batch being read now
        self.windows: dict[int, np.ndarray] = {}  # window -> unit ids scheduled in it
        self.futures: dict[int, list[Future[None]]] = {}
        self.retired = -1
        self.fetched = 0  # bytes this process downloaded (for tests and describe())
        self.held: dict[str, int] = {}  # cache file -> its blocks' bytes (files never change)
        self.generation = -1  # the evict lock's store count this process left there
        self.room = 0  # bytes free under the bound after this process's last store


class ShardCache(CachedReads):
    """Fetches units of one remote store into a local directory; see the module docstring."""

    def __init__(
        self,
        loc: Location,
        manifest: Manifest,
        *,
        cache_dir: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.loc = loc
        self.manifest = manifest
        self.columns: tuple[Column, ...] = manifest.columns
        where = f"{loc.url.rstrip('/')}/manifest.json"
        for shard in manifest.shards:
            check_path_fields(shard, where=where)
        self.root = os.path.abspath(cache_dir or default_cache_dir())
        self.dir = os.path.join(self.root, xxhash.xxh3_64_hexdigest(loc.url.rstrip("/").encode()))
        env = os.environ.get("EPOCHAL_CACHE_SIZE")
        self.max_bytes = (
            max_bytes if max_bytes is not None else int(env) if env else DEFAULT_CACHE_SIZE
        )
        if self.max_bytes < 1:
            raise InvalidValueError(
                f"cache_size must be a positive number of bytes, got {self.max_bytes}"
            )
        shards = manifest.shards
        self.blocks = bool(shards) and all(s.granules_xxh3 is not None for s in shards)
        self._g = np.array(
            [(s.granule_records or 1) if self.blocks else max(s.records, 1) for s in shards],
            dtype=np.int64,
        )
        units = np.maximum(1, -(-np.array([s.records for s in shards], dtype=np.int64) // self._g))
        self._unit_base = np.concatenate([[0], np.cumsum(units)]).astype(np.int64)
        self._by_digest: dict[str, int] = {}
        for k, s in enumerate(shards):
            self._by_digest.setdefault(s.xxh3, k)
        self._small_cols = self._pick_small_columns() if self.blocks else frozenset()
        # the smallest cache that can work: the largest unit plus room to read it
        largest = (
            max(s.bytes for s in shards)
            if not self.blocks
            else max(
                (
                    s.bytes * s.granule_records // max(s.records, 1)
                    for s in shards
                    if s.granule_records
                ),
                default=0,
            )
        )
        if self.max_bytes < _alloc(largest):
            raise CacheTooSmallError(
                f"cache_size {self.max_bytes} bytes cannot hold one unit of {loc.url} "
                f"({'a granule' if self.blocks else 'a whole shard'} of up to {largest} bytes); "
                f"use at least {_alloc(largest)} bytes"
                + (
                    ""
                    if self.blocks
                    else " (or rebuild the store with this epochal for range reads)"
                )
            )
        self._state = _ProcessState()

    def _pick_small_columns(self) -> frozenset[int]:
        """Fixed-size columns fetched whole with each shard's head (labels, ids, ...).

        A granule's columns lie in separate buffers of its shard, so each costs a range
        request of its own; requests, not bytes, are what object stores (and their
        latency) charge for. Columns that together take at most 1/8 of a record's bytes
        are fetched once per shard instead, next to the offsets the head holds anyway, so
        a granule run is one request (its large columns') instead of two or more. At
        least one column stays range-read.
        """
        n = sum(s.records for s in self.manifest.shards)
        budget = self.manifest.num_bytes / max(n, 1) / 8
        ranged = [
            j
            for j, c in enumerate(self.columns)
            if not (c.kind == "scalar" and c.numpy_dtype.kind == "b")
        ]
        fixed = sorted(
            (self.columns[j].itemsize, j) for j in ranged if not self.columns[j].variable
        )
        chosen: set[int] = set()
        used = 0
        for size, j in fixed:
            if used + size > budget or len(chosen) + 1 >= len(ranged):
                break
            chosen.add(j)
            used += size
        return frozenset(chosen)

    # -- per-process state -----------------------------------------------------------------

    def _local(self) -> _ProcessState:
        if self._state.pid != os.getpid():  # forked (a DataLoader worker): nothing carries over
            self._state = _ProcessState()
        return self._state

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_state"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state = _ProcessState()

    @property
    def fetched_bytes(self) -> int:
        """Bytes this process has downloaded through this cache."""
        return self._local().fetched

    # -- names -------------------------------------------------------------------------------

    def where(self, k: int) -> str:
        return f"{SHARDS_DIR}/{self.manifest.shards[k].name} of {self.loc.url}"

    def unit_path(self, k: int, u: int) -> str:
        digest = self.manifest.shards[k].xxh3
        if not self.blocks:
            return os.path.join(self.dir, f"s-{digest}.arrow")
        return os.path.join(self.dir, f"b-{digest}-{u}.unit")

    def unit_id(self, k: int, u: int) -> int:
        return int(self._unit_base[k]) + u

    # -- fetching ----------------------------------------------------------------------------

    def _get_ranges(
        self,
        k: int,
        ranges: list[tuple[int, int]],
        *,
        groups: list[int] | None = None,
    ) -> list[bytes]:
        """Byte ranges of shard ``k``, requested concurrently (fsspec's ``cat_ranges``).

        Ranges of one group (one run of granules, or runs coalesced into one request)
        closer than a small gap go in one request: requests, not bytes, are what small
        columns and small blocks cost. Ranges of different groups never merge, so a
        granule between two runs is not fetched again unless their group says so.
        """
        remote = self.loc.path(SHARDS_DIR, self.manifest.shards[k].name)
        tags = groups if groups is not None else [0] * len(ranges)
        wanted = sorted((a, b, t) for (a, b), t in zip(ranges, tags, strict=True) if b > a)
        merged: list[list[int]] = []
        for a, b, t in wanted:
            if merged and merged[-1][2] == t and a <= merged[-1][1] + _MERGE_GAP:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b, t])
        try:
            got = (
                self.loc.fs.cat_ranges(
                    [remote] * len(merged), [m[0] for m in merged], [m[1] for m in merged]
                )
                if merged
                else []
            )
        except FileNotFoundError as err:
            raise CorruptStoreError(f"shard {self.where(k)} is missing") from err
        for (a, b, _), piece in zip(merged, got, strict=True):
            if isinstance(piece, FileNotFoundError):
                raise CorruptStoreError(f"shard {self.where(k)} is missing") from piece
            if isinstance(piece, BaseException):
                raise piece
            if len(piece) != b - a:
                raise CorruptStoreError(
                    f"shard {self.where(k)} is truncated or damaged: bytes [{a}, {b}) came back as "
                    f"{len(piece)} bytes"
                )
        self._local().fetched += sum(len(p) for p in got)
        starts = [a for a, _, _ in merged]
        out: list[bytes] = []
        for a, b in ranges:
            if b <= a:
                out.append(b"")
                continue
            i = bisect.bisect_right(starts, a) - 1
            out.append(bytes(got[i][a - starts[i] : b - starts[i]]))
        return out

    def _small(self, name: str, k: int, fetch: Any, check: Any) -> Any:
        """A small per-shard file (granule index, head): cached, checked on every load."""
        path = os.path.join(self.dir, name)
        with contextlib.suppress(FileNotFoundError):
            with open(path, "rb") as f:
                raw = f.read()
            try:
                return check(raw)
            except CorruptStoreError:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # damaged in the cache: fetch it again
        with self._unit_locks(k, [0], kind="hlock"):
            with contextlib.suppress(FileNotFoundError):
                with open(path, "rb") as f:
                    raw = f.read()
                return check(raw)
            raw = fetch()
            value = check(raw)
            with contextlib.suppress(_NoRoom):
                self._store(path, raw, window=None)
        return value

    def head(self, k: int) -> ShardHead:
        """Shard ``k``'s head (buffer positions, offsets, bits), fetched once and cached."""
        state = self._local()
        head = state.heads.get(k)
        if head is not None:
            return head
        shard = self.manifest.shards[k]
        if not self.blocks:
            head = self._head_of_file(k)
        else:
            where = self.where(k)

            def fetch_index() -> bytes:
                try:
                    raw = self.loc.read(BLOCKS_DIR, index_name(shard.name))
                except FileNotFoundError as err:
                    raise CorruptStoreError(f"shard {where}: its granule index is missing") from err
                self._local().fetched += len(raw)
                return raw

            def check_index(raw: bytes) -> dict[str, Any]:
                return parse_index(raw, shard, self.columns, where=where)

            body = self._small(f"i-{shard.xxh3}.json", k, fetch_index, check_index)
            # the head file: the head (checked here) and the small columns' whole buffers
            # (checked granule by granule, as each granule's digest covers them)
            ranges = head_ranges(body)
            head_len = sum(b - a for a, b in ranges)
            small = sorted(self._small_cols)
            for j in small:
                pos, size = body["columns"][j]["rows"]
                ranges.append((pos, pos + size))
            total = sum(b - a for a, b in ranges)

            def check_head(raw: bytes) -> ShardHead:
                if len(raw) != total:
                    raise CorruptStoreError(
                        f"shard {where}: its cached head has {len(raw)} bytes, expected {total}"
                    )
                head = parse_head(body, raw[:head_len], self.columns, where=where)
                cursor = head_len
                for j in small:
                    size = body["columns"][j]["rows"][1]
                    head.rows[j] = raw[cursor : cursor + size]
                    cursor += size
                return head

            head = self._small(
                f"h-{shard.xxh3}.head",
                k,
                lambda: b"".join(self._get_ranges(k, ranges)),
                check_head,
            )
        with state.lock:
            state.heads.setdefault(k, head)
        return state.heads[k]

    def _head_of_file(self, k: int) -> ShardHead:
        """Whole-shard mode: positions from the cached shard itself, mapped only briefly."""
        from epochal.store._reader import shard_head_of_file

        for _ in range(3):
            path = self.ensure(k, 0)
            try:
                return shard_head_of_file(
                    path, self.manifest.shards[k], self.columns, self.where(k)
                )
            except CorruptStoreError:
                if os.path.exists(path):
                    raise
        raise CorruptStoreError(f"shard {self.where(k)} keeps vanishing from the cache {self.dir}")

    def ensure(self, k: int, u: int) -> str:
        """Local path of unit ``u`` of shard ``k``, fetching and verifying it if needed."""
        path = self.unit_path(k, u)
        if os.path.exists(path):
            return path
        if self.blocks:
            self.head(k)  # before the unit's lock: see _unit_locks
        with self._unit_locks(k, [u]):
            if not os.path.exists(path):
                if self.blocks:
                    self._fetch_granules(k, [u], window=None)
                else:
                    self._fetch_shard(k, path)
        return path

    def _fetch_granules(self, k: int, units: list[int], *, window: int | None) -> None:
        """Fetch granules ``units`` of shard ``k`` (sorted): one range per column for the
        span they cover, each granule checked and stored on its own. Locks are held."""
        head = self.head(k)
        runs: list[list[int]] = []  # contiguous pieces of ``units``: one range per column each
        for u in units:
            if runs and runs[-1][-1] + 1 == u:
                runs[-1].append(u)
            else:
                runs.append([u])
        spans = [head.unit_ranges(run[0], run[-1] + 1) for run in runs]
        # per range-read column of unit_ranges: whether it is fetched (not with the head)
        fetched = [j not in head.rows for j, col in enumerate(head.cols) if col.kind != "bits"]
        wanted = [[r for r, f in zip(span, fetched, strict=True) if f] for span in spans]
        # a window's runs with small gaps between them share a group: one request (the
        # gaps' bytes are fetched and dropped); batch misses (window None) never coalesce
        group = list(range(len(runs)))
        fillers: list[tuple[int, int, int]] = []  # the gaps' ranges, per column, of coalesced runs
        size = [sum(b - a for a, b in span) for span in wanted]
        wasted = total = 0
        for i in range(1, len(runs) if window is not None else 0):
            between = [(b0, a1) for (_, b0), (a1, _) in zip(wanted[i - 1], wanted[i], strict=True)]
            gap = sum(b - a for a, b in between)
            if coalesces(gap, wasted, (total or size[i - 1]) + size[i]):
                group[i] = group[i - 1]
                wasted, total = wasted + gap, (total or size[i - 1]) + size[i]
                fillers += [(a, b, group[i]) for a, b in between]
            else:
                wasted = total = 0
        flat = self._get_ranges(  # all at once
            k,
            [r for span in wanted for r in span] + [(a, b) for a, b, _ in fillers],
            groups=[group[i] for i, sp in enumerate(wanted) for _ in sp] + [t for *_, t in fillers],
        )
        assert head.granules is not None
        width = sum(fetched)
        for i, run in enumerate(runs):
            got = iter(flat[i * width : (i + 1) * width])
            pieces = [next(got) if f else None for f in fetched]
            self._store_run(k, head, run, spans[i], pieces, window)

    def _store_run(
        self,
        k: int,
        head: ShardHead,
        run: list[int],
        span: list[tuple[int, int]],
        pieces: list[bytes | None],
        window: int | None,
    ) -> None:
        assert head.granules is not None
        for u in run:
            raw = self._granule_bytes(head, u, span, pieces)
            got = xxhash.xxh3_64_hexdigest(raw)
            if got != head.granules[u] and head.rows:
                # the small columns came with a cached head, which is checked only here:
                # fetch the head again in case the local copy was damaged
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, f"h-{self.manifest.shards[k].xxh3}.head"))
                self._local().heads.pop(k, None)
                head = self.head(k)
                raw = self._granule_bytes(head, u, span, pieces)
                got = xxhash.xxh3_64_hexdigest(raw)
            assert head.granules is not None  # granule reads happen only with a granule index
            if got != head.granules[u]:
                a, b = head.unit_span(u)
                raise CorruptStoreError(
                    f"shard {self.where(k)} is corrupt: granule {u} (records {a}..{b - 1}) has xxh3 "
                    f"{got}, its granule index says {head.granules[u]}"
                )
            self._store(self.unit_path(k, u), raw, window=window)

    @staticmethod
    def _granule_bytes(
        head: ShardHead, u: int, span: list[tuple[int, int]], pieces: list[bytes | None]
    ) -> bytes:
        """Granule ``u``'s cache file: its column ranges back to back, from the run's
        fetched ``pieces`` (ranges ``span``) or, for small columns, from the head."""
        cols = [j for j, col in enumerate(head.cols) if col.kind != "bits"]
        parts = []
        for j, piece, (start, _), (a, b) in zip(
            cols, pieces, span, head.unit_ranges(u), strict=True
        ):
            if piece is None:
                base = head.cols[j].pos
                parts.append(head.rows[j][a - base : b - base])
            else:
                parts.append(piece[a - start : b - start])
        return b"".join(parts)

    def _fetch_shard(self, k: int, path: str) -> None:
        """Whole-shard mode: stream the shard into a reserved temporary, check, rename."""
        shard = self.manifest.shards[k]
        remote = self.loc.path(SHARDS_DIR, shard.name)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        digest = xxhash.xxh3_64()
        size = 0
        try:
            with self._evict_lock() as lock:
                self._make_room(_alloc(shard.bytes), window=None, lock=lock)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with contextlib.suppress(OSError):  # reserve the space others' eviction counts
                    os.posix_fallocate(fd, 0, max(shard.bytes, 1))
                os.close(fd)
            with self.loc.fs.open(remote, "rb") as src, open(tmp, "r+b") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.truncate(size)
            self._local().fetched += size
            if (size, digest.hexdigest()) != (shard.bytes, shard.xxh3):
                raise CorruptStoreError(
                    f"shard {self.where(k)} is corrupt: {size} bytes with xxh3 "
                    f"{digest.hexdigest()}, the manifest says {shard.bytes} bytes with xxh3 {shard.xxh3}"
                )
            os.replace(tmp, path)
        except FileNotFoundError as err:
            raise CorruptStoreError(f"shard {self.where(k)} is missing") from err
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def verify_shard(self, k: int) -> None:
        """Hash shard ``k`` straight from the store (not through the cache)."""
        shard = self.manifest.shards[k]
        digest = xxhash.xxh3_64()
        size = 0
        try:
            with self.loc.fs.open(self.loc.path(SHARDS_DIR, shard.name), "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise CorruptStoreError(f"shard {self.where(k)} is missing") from None
        if (size, digest.hexdigest()) != (shard.bytes, shard.xxh3):
            raise CorruptStoreError(
                f"shard {self.where(k)} is corrupt: {size} bytes with xxh3 {digest.hexdigest()}, the "
                f"manifest says {shard.bytes} bytes with xxh3 {shard.xxh3}"
            )
        if self.blocks:
            self._local().heads.pop(k, None)
            self.head(k)

    def check_cached(self) -> tuple[int, list[str]]:
        """Hash every unit of this store cached on this machine; remove the corrupt ones.

        A unit is checked when it is downloaded and trusted afterwards, so damage on the
        local disk would go unseen: this finds it. Each removed unit is reported with a
        :class:`~epochal.store.StoreWarning` naming its shard; the next read downloads it
        again (verified).

        Returns:
            How many cached units were checked, and the names of the shards that had a
            corrupt one, in shard order.
        """
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return 0, []
        checked, bad = 0, set()
        for name in names:
            uid = self._uid_of(name)
            if uid is None or not name.endswith((".unit", ".arrow")):
                continue
            k = int(np.searchsorted(self._unit_base, uid, side="right")) - 1
            u = uid - int(self._unit_base[k])
            path = os.path.join(self.dir, name)
            try:
                got = hash_file(path)[1]
            except FileNotFoundError:
                continue  # evicted meanwhile
            except OSError as err:
                got = f"unreadable ({err})"
            checked += 1
            granules = self.head(k).granules if self.blocks else None
            want = self.manifest.shards[k].xxh3 if granules is None else granules[u]
            if got == want:
                continue
            warnings.warn(
                f"the cached copy {path} of shard {self.where(k)} is corrupt (xxh3 {got}, "
                f"expected {want}); removed, the next read downloads it again",
                StoreWarning,
                stacklevel=2,
            )
            with contextlib.suppress(OSError):
                os.unlink(path)
            bad.add(k)
        return checked, [self.manifest.shards[k].name for k in sorted(bad)]

    @property
    def min_block_records(self) -> int:
        """Records of the largest unit: the smallest range a windowed order should read."""
        return int(self._g.max()) if len(self._g) else 1

    def store_bytes_on_disk(self) -> int:
        """What the whole store would occupy in the cache (units rounded to 4 KiB pages)."""
        units = int(self._unit_base[-1])
        return self.manifest.num_bytes + units * 4096 + self.heads_bytes_on_disk()

    def heads_bytes_on_disk(self) -> int:
        """What every shard's head (granule index, head with the small columns) occupies in
        the cache, rounded to 4 KiB pages; 0 for whole-shard units (no heads)."""
        if not self.blocks:
            return 0
        n = sum(s.records for s in self.manifest.shards)
        small = sum(self.columns[j].itemsize for j in self._small_cols) * n  # in the heads too
        return small + 2 * len(self.manifest.shards) * 4096
