"""The local cache for stores on object storage (any non-local fsspec URL).

Units of a store are fetched on first use (or ahead, by :meth:`ShardCache.schedule`) into
``<cache_dir>/<hash of the store URL>/`` and read from there with ``pread``; nothing is
memory-mapped and every file is closed as soon as a batch is read from it. A unit is one
granule of a shard (a few records, fetched with one byte-range request per column and
checked against the writer's per-granule xxh3, see ``_blocks``) or, for stores written
without granule sidecars, a whole shard (checked against the manifest's xxh3).

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
import fcntl
import glob
import logging
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
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
from epochal.store._columns import as_records
from epochal.store._errors import CorruptStoreError, StoreError, StoreWarning
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
PREFETCH_THREADS = 16  # range GETs in flight: object stores reward parallel requests
_CHUNK = 8 << 20
_LOCK_STRIPES = 1024  # lock files per store folder (made on first use): rarely shared
_LOCK_SPAN = 8  # consecutive granules under one lock: a run takes few locks
_MERGE_GAP = 16 << 10  # byte ranges of one shard closer than this are one request
_READ_GAP = 64 << 10  # records closer than this in one unit are read with one pread
_STALE_TMP_S = 600  # a temporary this old belongs to a process that died mid-download
_OWN_FILE = re.compile(
    r"(?:b-[0-9a-f]{16}-\d+\.unit|s-[0-9a-f]{16}\.arrow|[ih]-[0-9a-f]{16}\.(?:json|head))"
    r"(?:\.tmp-[0-9a-f]{12})?"
)
_PINS = re.compile(r"\.pins-(\d+)\.npy")
_log = logging.getLogger("epochal.store")


class CacheTooSmallError(StoreError):
    """The cache cannot hold what the current batches need; the message says the minimum."""


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


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _alloc(size: int) -> int:
    """Bytes a file of ``size`` bytes occupies (rounded up to 4 KiB pages/blocks)."""
    return -(-size // 4096) * 4096


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _NoRoom(Exception):
    """A prefetch could not be stored without evicting nearer needs: skip it."""


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


class ShardCache:
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

    @staticmethod
    def lock_stripe(k: int, u: int, kind: str = "lock") -> int:
        """The lock file (of :data:`_LOCK_STRIPES`) of granule ``u`` of shard ``k``:
        ``_LOCK_SPAN`` consecutive granules share one, hashed so that regular patterns
        of units (every n-th shard) do not."""
        return xxhash.xxh3_64_intdigest(f"{kind}:{k}:{u // _LOCK_SPAN}".encode()) % _LOCK_STRIPES

    @contextlib.contextmanager
    def _unit_locks(self, k: int, units: list[int], *, kind: str = "lock") -> Iterator[None]:
        """Locks of these units of shard ``k``, taken in ascending order (never a deadlock).

        A holder of unit locks never takes another unit lock; heads have locks of their own
        (``kind="hlock"``) and are loaded before any unit lock is taken.
        """
        os.makedirs(self.dir, exist_ok=True)
        with contextlib.ExitStack() as stack:
            for stripe in sorted({self.lock_stripe(k, u, kind) for u in units}):
                stack.enter_context(_locked(os.path.join(self.dir, f".{kind}-{stripe:03d}")))
            yield

    # -- fetching ----------------------------------------------------------------------------

    def _get_ranges(
        self, k: int, ranges: list[tuple[int, int]], *, groups: list[int] | None = None
    ) -> list[bytes]:
        """Byte ranges of shard ``k``, requested concurrently (fsspec's ``cat_ranges``).

        Ranges of one group (one run of granules) closer than a small gap go in one
        request: requests, not bytes, are what small columns cost. Ranges of different
        groups never merge, so a granule between two runs is not fetched again.
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
            head = self._small(
                f"h-{shard.xxh3}.head",
                k,
                lambda: b"".join(self._get_ranges(k, head_ranges(body))),
                lambda raw: parse_head(body, raw, self.columns, where=where),
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
        flat = self._get_ranges(  # all at once
            k,
            [r for span in spans for r in span],
            groups=[i for i, sp in enumerate(spans) for _ in sp],
        )
        assert head.granules is not None
        width = len(spans[0])
        for i, run in enumerate(runs):
            self._store_run(k, head, run, spans[i], flat[i * width : (i + 1) * width], window)

    def _store_run(
        self,
        k: int,
        head: ShardHead,
        run: list[int],
        span: list[tuple[int, int]],
        pieces: list[bytes],
        window: int | None,
    ) -> None:
        assert head.granules is not None
        for u in run:
            parts = [
                piece[a - start : b - start]
                for piece, (start, _), (a, b) in zip(pieces, span, head.unit_ranges(u), strict=True)
            ]
            raw = b"".join(parts)
            got = xxhash.xxh3_64_hexdigest(raw)
            if got != head.granules[u]:
                a, b = head.unit_span(u)
                raise CorruptStoreError(
                    f"shard {self.where(k)} is corrupt: granule {u} (records {a}..{b - 1}) has xxh3 "
                    f"{got}, its granule index says {head.granules[u]}"
                )
            self._store(self.unit_path(k, u), raw, window=window)

    def _fetch_shard(self, k: int, path: str) -> None:
        """Whole-shard mode: stream the shard into a reserved temporary, check, rename."""
        shard = self.manifest.shards[k]
        remote = self.loc.path(SHARDS_DIR, shard.name)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        digest = xxhash.xxh3_64()
        size = 0
        try:
            with self._evict_lock():
                self._make_room(_alloc(shard.bytes), window=None)
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

    # -- the disk bound ----------------------------------------------------------------------

    def _evict_lock(self) -> contextlib.AbstractContextManager[None]:
        os.makedirs(self.dir, exist_ok=True)
        return _locked(os.path.join(self.dir, ".evict.lock"))

    def _store(self, path: str, raw: bytes, *, window: int | None) -> None:
        """Write a checked unit atomically, after making room for it (all under the lock)."""
        with self._evict_lock():
            self._make_room(_alloc(len(raw)), window=window)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
            try:
                with open(tmp, "wb") as f:
                    f.write(raw)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _load_pins(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every live process's schedule: (unit ids, windows) per process."""
        out = []
        for path in glob.glob(os.path.join(glob.escape(self.dir), ".pins-*.npy")):
            match = _PINS.fullmatch(os.path.basename(path))
            if match is None:
                continue
            if not _pid_alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            with contextlib.suppress(OSError, ValueError):
                table = np.load(path)
                if table.ndim == 2 and table.shape[1] == 2 and len(table):
                    out.append((table[:, 0], table[:, 1]))
        return out

    def _uid_of(self, name: str) -> int | None:
        if not name.startswith(("b-", "s-")):
            return None
        k = self._by_digest.get(name[2:18])
        if k is None:
            return None
        u = int(name[19:].split(".")[0]) if name.startswith("b-") else 0
        return self.unit_id(k, u)

    def _make_room(self, need: int, *, window: int | None) -> None:
        """Evict until ``need`` more bytes fit under the bound (the evict lock is held).

        ``window``: the window the bytes are stored for (None: needed now).
        """
        entries = []
        used = 0
        now = time.time()
        for entry in os.scandir(self.dir):
            if _PINS.fullmatch(entry.name):  # schedules take disk too: counted, never evicted
                with contextlib.suppress(FileNotFoundError):
                    used += entry.stat().st_blocks * 512
                continue
            if not _OWN_FILE.fullmatch(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                held = st.st_blocks * 512
                used += held
                entries.append((entry.name, held, st.st_mtime))
        if used + need <= self.max_bytes:
            return
        pinned: dict[int, int] = {}  # unit id -> nearest window needing it, or -1: current
        for uids, windows in self._load_pins():
            # a process holds the window in flight, the one being read and the one ahead
            # (retired two behind): only the one ahead may give way. Taking the oldest alone
            # as current let the misses of the batch being read evict that batch's window.
            newest, oldest = int(windows.max()), int(windows.min())
            for uid, w in zip(uids.tolist(), windows.tolist(), strict=True):
                mark = -1 if w < newest or w == oldest else w
                pinned[uid] = min(pinned.get(uid, mark), mark) if uid in pinned else mark
        candidates = []
        for name, held, mtime in entries:
            if ".tmp-" in name:
                if now - mtime > _STALE_TMP_S:
                    candidates.append(((0, 0, mtime), name, held))
                continue
            uid = self._uid_of(name)
            if uid is None:  # a granule index or head: small, and needed to read its shard
                candidates.append(((1, 0, mtime), name, held))
                continue
            mark = pinned.get(uid)
            if mark is None:
                candidates.append(((0, 0, mtime), name, held))
            elif mark >= 0 and (window is None or mark > window):
                candidates.append(((2, -mark, mtime), name, held))
        for _, name, held in sorted(candidates):
            if used + need <= self.max_bytes:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, name))
                used -= held
        if used + need <= self.max_bytes:
            return
        if window is not None:
            raise _NoRoom
        raise CacheTooSmallError(
            f"cache_size {self.max_bytes} bytes is too small for {self.loc.url}: the units the current "
            f"batches need ({used} bytes held) plus {need} more do not fit; use at least {used + need} "
            f"bytes (a windowed Loader sizes its windows to a third of the cache)"
        )

    # -- prefetch ------------------------------------------------------------------------------

    def units_of(self, ranges: np.ndarray, starts: np.ndarray) -> list[tuple[int, int, int]]:
        """Record ranges -> runs (shard, first unit, stop unit), in reading order."""
        runs: list[tuple[int, int, int]] = []
        for start, stop in np.asarray(ranges, dtype=np.int64).reshape(-1, 2).tolist():
            if stop <= start:
                continue
            k = int(np.searchsorted(starts, start, side="right")) - 1
            while k < len(self.manifest.shards) and int(starts[k]) < stop:
                a = max(start, int(starts[k])) - int(starts[k])
                b = min(stop, int(starts[k + 1])) - int(starts[k])
                if b > a:
                    g = int(self._g[k])
                    runs.append((k, a // g, -(-b // g)))
                k += 1
        return runs

    def schedule(self, ranges: np.ndarray, starts: np.ndarray, *, window: int) -> None:
        """Pin the units of ``ranges`` for ``window`` and fetch them on the prefetch pool."""
        state = self._local()
        if window <= state.retired or window in state.windows:
            return
        runs = self.units_of(ranges, starts)
        ids = [self.unit_id(k, u) for k, u0, u1 in runs for u in range(u0, u1)]
        state.windows[window] = np.unique(np.array(ids, dtype=np.int64))
        need = self.scheduled_bytes(window)
        if need > self.max_bytes:
            del state.windows[window]
            raise CacheTooSmallError(
                f"cache_size {self.max_bytes} bytes is too small for window {window} of {self.loc.url}: "
                f"its units take about {need} bytes; use at least {need} bytes (a windowed Loader "
                f"needs room for about three windows)"
            )
        self._write_pins(state)
        if state.pool is None:
            state.pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="epochal-prefetch")
        futures = state.futures.setdefault(window, [])
        # the window's missing units per shard, each with when it is first read: blocks
        # next to each other in a shard (from different ranges of the window) become one
        # run, one range request per column, since requests and not bytes cost the most
        first: dict[tuple[int, int], int] = {}
        for k, u0, u1 in runs:
            for u in range(u0, u1):
                first.setdefault((k, u), len(first))
        missing = sorted(ku for ku in first if not os.path.exists(self.unit_path(*ku)))
        tasks: list[tuple[int, int, list[int]]] = []  # (first read, shard, run)
        for k, u in missing:
            if tasks and tasks[-1][1] == k and tasks[-1][2][-1] + 1 == u:
                tasks[-1][2].append(u)
                tasks[-1] = (min(tasks[-1][0], first[k, u]), k, tasks[-1][2])
            else:
                tasks.append((first[k, u], k, [u]))
        for _, k, run in sorted(tasks):  # what the first batch reads first
            futures.append(state.pool.submit(self._prefetch, k, run, window))

    def _fetch_run(self, k: int, units: list[int], window: int | None) -> None:
        """Fetch the missing ones of granules ``units`` of shard ``k`` under their locks."""
        if not self.blocks:
            self.ensure(k, 0)
            return
        self.head(k)  # before the units' locks: see _unit_locks
        with self._unit_locks(k, units):
            missing = [u for u in units if not os.path.exists(self.unit_path(k, u))]
            if missing:
                self._fetch_granules(k, missing, window=window)

    def _ensure_batch(self, pairs: list[tuple[int, int]]) -> None:
        """Fetch every missing unit a batch reads: heads first, then one task per run of
        contiguous granules (one range request per column), all concurrently."""
        state = self._local()
        if state.demand is None:
            state.demand = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="epochal-fetch")
        if self.blocks:
            heads = sorted({k for k, _ in pairs} - state.heads.keys())
            list(state.demand.map(self.head, heads))
        missing = [(k, u) for k, u in pairs if not os.path.exists(self.unit_path(k, u))]
        runs: list[tuple[int, list[int]]] = []
        for k, u in missing:
            if runs and runs[-1][0] == k and runs[-1][1][-1] + 1 == u:
                runs[-1][1].append(u)
            elif not runs or runs[-1][0] != k or self.blocks:
                runs.append((k, [u]))
        if len(runs) == 1:
            self._fetch_run(*runs[0], None)
        elif runs:
            list(state.demand.map(lambda run: self._fetch_run(run[0], run[1], None), runs))

    def _prefetch(self, k: int, units: list[int], window: int) -> None:
        state = self._local()
        if window <= state.retired:
            return
        try:
            self._fetch_run(k, units, window)
        except _NoRoom:
            pass  # fetched on demand once its window is the current one
        except Exception:  # the read that needs it fetches again and raises the real error
            _log.debug("prefetch of shard %s units %s failed", k, units, exc_info=True)

    def retire(self, *, window: int) -> None:
        """Units scheduled only for windows <= ``window`` may be evicted from now on."""
        state = self._local()
        state.retired = max(state.retired, window)
        for w in [w for w in state.windows if w <= window]:
            del state.windows[w]
        for w in [w for w in state.futures if w <= window]:
            for future in state.futures.pop(w):
                future.cancel()
        self._write_pins(state)

    def _write_pins(self, state: _ProcessState) -> None:
        rows = [
            np.stack([ids, np.full(len(ids), w, dtype=np.int64)], axis=1)
            for w, ids in sorted(state.windows.items())
            if len(ids)
        ]
        table = np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f".pins-{os.getpid()}.npy")
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, table)
        os.replace(tmp, path)

    @property
    def min_block_records(self) -> int:
        """Records of the largest unit: the smallest range a windowed order should read."""
        return int(self._g.max()) if len(self._g) else 1

    def store_bytes_on_disk(self) -> int:
        """What the whole store would occupy in the cache (units rounded to 4 KiB pages)."""
        units = int(self._unit_base[-1])
        heads = 2 * len(self.manifest.shards) if self.blocks else 0
        return self.manifest.num_bytes + (units + heads) * 4096

    def scheduled_bytes(self, window: int) -> int:
        """Bytes of the units pinned for ``window`` (estimated from the manifest)."""
        ids = self._local().windows.get(window)
        if ids is None or not len(ids):
            return 0
        k = np.searchsorted(self._unit_base, ids, side="right") - 1
        sizes = np.array([s.bytes for s in self.manifest.shards], dtype=np.int64)
        units = np.diff(self._unit_base)
        return int((sizes[k] // units[k]).sum())

    def close(self) -> None:
        """Stop prefetching and drop this process's schedule."""
        state = self._local()
        for pool in (state.pool, state.demand):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        state.pool = state.demand = None
        state.windows.clear()
        state.futures.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f".pins-{os.getpid()}.npy"))

    # -- reading -------------------------------------------------------------------------------

    def gather(self, idx: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray | list[Any]]:
        """Records ``idx`` (in range) as columns, read from the cached units with ``pread``."""
        n = len(idx)
        columns = self.columns
        fixed: list[np.ndarray | None] = []
        var: list[list[Any] | None] = []
        for column in columns:
            if column.kind in ("bytes", "str"):
                fixed.append(None)
                var.append([None] * n)
            elif column.kind == "scalar" and column.numpy_dtype.kind == "b":
                fixed.append(np.empty(n, dtype=bool))
                var.append(None)
            else:
                fixed.append(np.empty(n, dtype=np.dtype((np.void, column.itemsize))))
                var.append(None)
        if n:
            sid = np.searchsorted(starts, idx, side="right") - 1
            local = idx - starts[sid]
            unit = local // self._g[sid]
            key = self._unit_base[sid] + unit
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
            cuts = np.flatnonzero(np.diff(sorted_key)) + 1
            groups = np.split(order, cuts)
            pairs = [(int(sid[g[0]]), int(unit[g[0]])) for g in groups]
            # fetch the missing units concurrently, in chunks of at most half the cache (a
            # batch bigger than that is read chunk by chunk, evicting as it goes)
            sizes = np.diff(self._unit_base)
            budget = self.max_bytes // 2
            lo = 0
            while lo < len(pairs):
                hi, used = lo, 0
                while hi < len(pairs) and (hi == lo or used <= budget):
                    k = pairs[hi][0]
                    used += _alloc(self.manifest.shards[k].bytes // int(sizes[k]))
                    hi += 1
                self._ensure_batch(pairs[lo:hi])
                for (k, u), group in zip(pairs[lo:hi], groups[lo:hi], strict=True):
                    self._read_unit(k, u, group, local[group], fixed, var)
                lo = hi
        out: dict[str, np.ndarray | list[Any]] = {}
        for column, rows, values in zip(columns, fixed, var, strict=True):
            if values is not None:
                out[column.name] = values
            else:
                assert rows is not None
                out[column.name] = as_records(column, rows) if rows.dtype.kind == "V" else rows
        return out

    def _read_unit(
        self,
        k: int,
        u: int,
        where: np.ndarray,
        local: np.ndarray,
        fixed: list[np.ndarray | None],
        var: list[list[Any] | None],
    ) -> None:
        head = self.head(k)
        for attempt in range(3):
            path = self.ensure(k, u)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # evicted between fetch and open (the cache is tight): fetch again
            try:
                expected = self.manifest.shards[k].bytes if not self.blocks else head.unit_bytes(u)
                if os.fstat(fd).st_size != expected:
                    if attempt == 2:
                        raise CorruptStoreError(
                            f"shard {self.where(k)}: its cached unit {path} has "
                            f"{os.fstat(fd).st_size} bytes, expected {expected}"
                        )
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    continue
                with contextlib.suppress(OSError):
                    os.utime(fd)  # least recently used goes first
                self._read_columns(fd, head, u, where, local, fixed, var)
                return
            finally:
                os.close(fd)
        raise CorruptStoreError(f"shard {self.where(k)}: unit {u} keeps vanishing from {self.dir}")

    def _read_columns(
        self,
        fd: int,
        head: ShardHead,
        u: int,
        where: np.ndarray,
        local: np.ndarray,
        fixed: list[np.ndarray | None],
        var: list[list[Any] | None],
    ) -> None:
        bases = head.bases(u)
        ls = local.tolist()
        for j, (column, col) in enumerate(zip(self.columns, head.cols, strict=True)):
            if col.kind == "bits":
                out = fixed[j]
                assert out is not None and col.bits is not None
                out[where] = col.bits[local]
            elif col.kind == "rows":
                size = col.itemsize
                out = fixed[j]
                assert out is not None
                starts = [bases[j] + x * size for x in ls]
                blob, at = _read_spans(fd, starts, [size] * len(ls))
                items = np.ndarray(
                    (len(blob) - size + 1,),
                    dtype=np.dtype((np.void, size)),
                    buffer=blob,
                    strides=(1,),
                )
                out[where] = items[at]
            else:
                offsets = col.offsets
                assert offsets is not None
                begin, end = offsets[local], offsets[local + 1]
                starts = (begin + bases[j]).tolist()
                lengths = (end - begin).tolist()
                blob, at = _read_spans(fd, starts, lengths)
                values = var[j]
                assert values is not None
                memory = memoryview(blob)
                text = column.kind == "str"
                for p, a, length in zip(where.tolist(), at.tolist(), lengths, strict=True):
                    piece = memory[a : a + length]
                    values[p] = str(piece, "utf-8") if text else bytes(piece)


def _read_spans(fd: int, starts: list[int], lengths: list[int]) -> tuple[bytes, np.ndarray]:
    """Read byte spans of a file with few ``pread`` calls: spans closer than a gap are read
    together. Returns the bytes read back to back and where each span starts in them."""
    order = sorted(range(len(starts)), key=starts.__getitem__)
    at = np.empty(len(starts), dtype=np.int64)
    chunks: list[bytes] = []
    cursor = 0
    i = 0
    while i < len(order):
        lo = starts[order[i]]
        hi = lo + lengths[order[i]]
        j = i + 1
        while j < len(order) and starts[order[j]] <= hi + _READ_GAP:
            hi = max(hi, starts[order[j]] + lengths[order[j]])
            j += 1
        chunk = os.pread(fd, hi - lo, lo) if hi > lo else b""
        if len(chunk) != hi - lo:
            raise OSError(f"short read: {len(chunk)} of {hi - lo} bytes at {lo}")
        for m in order[i:j]:
            at[m] = cursor + starts[m] - lo
        chunks.append(chunk)
        cursor += hi - lo
        i = j
    blob = b"".join(chunks) if len(chunks) != 1 else chunks[0]
    if not blob:
        blob = b"\0"  # numpy views need at least one byte
    return blob, at
