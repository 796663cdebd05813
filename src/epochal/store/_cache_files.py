"""The remote cache's folder: file names, locks, the disk bound and shared schedules.

:class:`DiskBound` is the part of :class:`~epochal.store._remote.ShardCache` that owns the
files of one store's cache folder (see the guarantees in ``_remote``'s docstring): every
write makes room first under one lock of the folder, counting real blocks (``st_blocks``);
eviction looks only at names the cache makes, in that folder; each process's schedule is a
``.pins-<pid>.npy`` file that every process's eviction reads; unit locks are ``flock``s on a
fixed set of stripe files (in its ``.locks`` subfolder).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from epochal.store._errors import StoreError
from epochal.store._fs import Location

if TYPE_CHECKING:
    from epochal.store._remote import _ProcessState

__all__ = ["EVICT_SLACK", "CacheTooSmallError", "DiskBound"]

_LOCK_STRIPES = 1024  # lock files per store folder (made on first use): rarely shared
_LOCK_SPAN = 8  # consecutive granules under one lock: a run takes few locks
_STALE_TMP_S = 600  # a temporary this old belongs to a process that died mid-download
# an eviction frees 1/EVICT_SLACK of the bound more than it must, from units no schedule
# needs (never from pinned ones): the next stores then fit without an eviction pass, which
# lists and stats the whole folder under the lock every store serialises on (~14 ms a
# store at 300 MB / 25%, and the 16 prefetch threads waited on it most of the time)
EVICT_SLACK = 32
_OWN_FILE = re.compile(
    r"(?:b-[0-9a-f]{16}-\d+\.unit|s-[0-9a-f]{16}\.arrow|[ih]-[0-9a-f]{16}\.(?:json|head))"
    r"(?:\.tmp-[0-9a-f]{12})?"
)
_PINS = re.compile(r"\.pins-(\d+)\.npy")


class CacheTooSmallError(StoreError):
    """The cache cannot hold what the current batches need; the message says the minimum."""


@contextlib.contextmanager
def _locked(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _generation(fd: int) -> int:
    """The count of stores made in the folder: the size of its evict lock file, which is
    sparse (a size, no blocks: the lock file takes no room under the disk bound)."""
    return os.fstat(fd).st_size


def _alloc(size: int) -> int:
    """Bytes a file of ``size`` bytes occupies (rounded up to 4 KiB pages/blocks)."""
    return -(-size // 4096) * 4096


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


class DiskBound:
    """The cache folder's files, locks and bound (a base of ``ShardCache``)."""

    loc: Location
    dir: str
    max_bytes: int
    _by_digest: dict[str, int]

    def _local(self) -> _ProcessState:
        raise NotImplementedError  # ShardCache's

    def unit_id(self, k: int, u: int) -> int:
        raise NotImplementedError  # ShardCache's

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
        # in a subfolder: the eviction pass lists the folder on every store, and up to
        # 2 x _LOCK_STRIPES lock files among the units made that listing most of its cost
        locks = os.path.join(self.dir, ".locks")
        os.makedirs(locks, exist_ok=True)
        with contextlib.ExitStack() as stack:
            for stripe in sorted({self.lock_stripe(k, u, kind) for u in units}):
                stack.enter_context(_locked(os.path.join(locks, f".{kind}-{stripe:03d}")))
            yield

    def _evict_lock(self) -> contextlib.AbstractContextManager[int]:
        os.makedirs(self.dir, exist_ok=True)
        return _locked(os.path.join(self.dir, ".evict.lock"))

    def _store(self, path: str, raw: bytes, *, window: int | None) -> None:
        """Write a checked unit atomically, after making room for it (all under the lock)."""
        with self._evict_lock() as lock:
            self._make_room(_alloc(len(raw)), window=window, lock=lock)
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

    def _make_room(self, need: int, *, window: int | None, lock: int) -> None:
        """Evict until ``need`` more bytes fit under the bound (the evict lock ``lock`` is held).

        ``window``: the window the bytes are stored for (None: needed now). Every call
        counts one store in the lock file's generation; a process that finds the
        generation it left there knows no other process stored since its last pass, so
        the room that pass left is still there (deletions without the lock only add to
        it) and it takes ``need`` from that room without listing the folder.
        """
        state = self._local()
        generation = _generation(lock)
        if generation == state.generation and state.room >= need:
            state.room -= need
            self._count_store(lock, state, generation)
            return
        state.generation = -1  # until this pass has counted the folder
        room = self._evict_for(need, window=window)
        state.room = room
        self._count_store(lock, state, generation)

    @staticmethod
    def _count_store(lock: int, state: _ProcessState, generation: int) -> None:
        state.generation = generation + 1
        os.ftruncate(lock, state.generation)

    def _evict_for(self, need: int, *, window: int | None) -> int:
        """The eviction pass of :meth:`_make_room`; returns the room left after ``need``."""
        # a finished file of the cache never changes (its name says its content), so its
        # blocks are stat'ed once per process; only temporaries and schedules every time
        state = self._local()
        known, held_now = state.held, {}
        listed: list[tuple[os.DirEntry[str], int]] = []
        used = 0
        for entry in os.scandir(self.dir):
            name = entry.name
            if name.startswith("."):
                if _PINS.fullmatch(name):  # schedules take disk too: counted, never evicted
                    with contextlib.suppress(FileNotFoundError):
                        used += entry.stat().st_blocks * 512
                continue
            held = known.get(name)
            if held is None:
                if not _OWN_FILE.fullmatch(name):
                    continue
                try:
                    held = entry.stat().st_blocks * 512
                except FileNotFoundError:
                    continue
            if ".tmp-" not in name:
                held_now[name] = held
            used += held
            listed.append((entry, held))
        state.held = held_now
        if used + need <= self.max_bytes:
            return self.max_bytes - used - need
        now = time.time()
        entries = []
        for entry, held in listed:
            with contextlib.suppress(FileNotFoundError):
                entries.append((entry.name, held, entry.stat().st_mtime))  # reads touch it: LRU
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
        low = self.max_bytes - self.max_bytes // EVICT_SLACK  # unpinned units go down to it
        for key, name, held in sorted(candidates):
            if used + need <= (low if key[0] == 0 else self.max_bytes):
                return self.max_bytes - used - need
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, name))
                used -= held
        if used + need <= self.max_bytes:
            return self.max_bytes - used - need
        if window is not None:
            raise _NoRoom
        raise CacheTooSmallError(
            f"cache_size {self.max_bytes} bytes is too small for {self.loc.url}: the units the current "
            f"batches need ({used} bytes held) plus {need} more do not fit; use at least {used + need} "
            f"bytes (a windowed Loader sizes its windows to a third of the cache)"
        )

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
