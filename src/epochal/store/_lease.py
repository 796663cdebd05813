"""Build leases: which builds are writing to a store right now.

Every build (a whole-store ``write``, one attempt of one partition, a ``merge``) takes a
unique id and holds a lease ``_builds/<name>.json`` while it runs; its shard files carry
the same name as a prefix (``part-<partition>-<id>-<seq>.arrow``). Two things rest on it:

- **Refusal**: a whole-store write or a merge is refused while another live build holds
  a lease on the same destination, with an error naming that build; a partition attempt
  is refused only while a whole-store write or a merge runs (partitions of a parallel
  build, and retried attempts of one partition, run side by side by design).
- **Garbage collection**: after a manifest is committed, shard files are removed only
  when the current manifest does not list them and their build's lease is not live. So
  no writer ever deletes the files of another writer that is still running.

Liveness. Local stores: the holder keeps an ``fcntl.flock`` on its lease file, so a lease
is live exactly while its process is (a SIGKILL releases it at once), and taking a lease
is made atomic by a lock on ``_builds/.lock``. Object storage has no locks: a lease is
live while its heartbeat (renewed as shards are written) is younger than
:data:`LEASE_TTL`, and two writers that start within the same instant may both pass the
check; that is safe anyway, since each build writes only its own uniquely named shards
and its manifest names exactly those, so a reader never sees a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

from epochal.store._errors import StoreError
from epochal.store._fs import Location

__all__ = ["BUILDS_DIR", "LEASE_TTL", "Lease", "fresh_listing", "live_leases", "new_build_id"]

BUILDS_DIR = "_builds"
LEASE_TTL = 600.0  # seconds without a heartbeat after which a remote lease is dead
_LOCK_NAME = ".lock"

# what each kind of build is refused by
_REFUSED_BY = {
    "write": {"write", "merge", "partition"},
    "merge": {"write", "merge"},
    "partition": {"write", "merge"},
}


def new_build_id() -> str:
    """A fresh build id: 16 hex digits, unique across processes and machines."""
    return uuid.uuid4().hex[:16]


def _describe(body: dict[str, Any]) -> str:
    age = time.time() - float(body.get("started", time.time()))
    what = body.get("kind", "write")
    if what == "partition":
        what = f"partition {body.get('partition')} attempt"
    return (
        f"{what} build {body.get('name')!r} (pid {body.get('pid')} on {body.get('host')}, "
        f"started {age:.0f}s ago)"
    )


class Lease:
    """This process's lease on a destination; see the module docstring."""

    def __init__(self, loc: Location, name: str, body: dict[str, Any], fd: int | None) -> None:
        self.loc = loc
        self.name = name
        self._body = body
        self._fd = fd
        self._renewed = time.monotonic()
        if fd is not None:
            _LOCKED.add(self)

    @classmethod
    def take(cls, loc: Location, name: str, *, kind: str, partition: int | None = None) -> Lease:
        """Take the lease ``name`` of a build of ``kind`` ("write", "partition", "merge").

        Raises:
            StoreError: another live build that this kind must not run beside holds a lease,
                naming it.
        """
        now = time.time()
        body = {
            "name": name,
            "kind": kind,
            "partition": partition,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now,
            "heartbeat": now,
        }
        refused_by = _REFUSED_BY[kind]
        if loc.is_local:
            with _dir_lock(loc):
                _refuse(loc, refused_by, name)
                fd = _create_locked(loc, name, body)
            return cls(loc, name, body, fd)
        lease = cls(loc, name, body, None)
        lease._put()
        try:
            # both may have written their lease: the older one (by start time, then name) wins
            for other in live_leases(loc).values():
                if (
                    other["name"] != name
                    and other.get("kind") in refused_by
                    and (float(other["started"]), str(other["name"])) < (now, name)
                ):
                    raise StoreError(_busy(loc, other))
        except BaseException:
            lease.release()
            raise
        return lease

    def renew(self) -> None:
        """Refresh a remote lease's heartbeat (at most every LEASE_TTL / 8 seconds)."""
        if self._fd is not None or time.monotonic() - self._renewed < LEASE_TTL / 8:
            return
        self._body["heartbeat"] = time.time()
        self._put()
        self._renewed = time.monotonic()

    def release(self) -> None:
        """Give the lease up: remove its file (and, locally, drop the lock)."""
        self.loc.remove(BUILDS_DIR, f"{self.name}.json")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        _LOCKED.discard(self)

    def _put(self) -> None:
        self.loc.put(json.dumps(self._body).encode(), BUILDS_DIR, f"{self.name}.json")


def _busy(loc: Location, other: dict[str, Any]) -> str:
    return (
        f"{loc.url} is being written by another {_describe(other)}; wait for it to finish or "
        f"stop it (a killed build's lease is dropped at once on local disk, after "
        f"{LEASE_TTL:.0f}s without a heartbeat on object storage)"
    )


def _refuse(loc: Location, refused_by: set[str], name: str) -> None:
    for other in live_leases(loc).values():
        if other.get("name") != name and other.get("kind") in refused_by:
            raise StoreError(_busy(loc, other))


@contextlib.contextmanager
def _dir_lock(loc: Location) -> Iterator[None]:
    directory = loc.path(BUILDS_DIR)
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create_locked(loc: Location, name: str, body: dict[str, Any]) -> int:
    """Write a lease file that is locked from the instant it is visible: a temporary file
    is locked first and renamed into place (the lock belongs to the inode, not the name)."""
    path = loc.path(BUILDS_DIR, f"{name}.json")
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(body).encode())
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


def _held_locally(path: str) -> bool:
    """Whether a live process holds the lock of the lease file at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if we got it
    return False


def fresh_listing(loc: Location, *parts: str) -> None:
    """Drop fsspec's cached listing of a folder: other machines' builds change it (s3fs, for
    one, caches listings for the life of the filesystem object)."""
    invalidate = getattr(loc.fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate(loc.path(*parts))


def live_leases(loc: Location) -> dict[str, dict[str, Any]]:
    """Lease name -> lease body, for every build that is writing to ``loc`` now."""
    out: dict[str, dict[str, Any]] = {}
    now = time.time()
    fresh_listing(loc, BUILDS_DIR)
    for entry in loc.listdir(BUILDS_DIR):
        if not entry.endswith(".json") or entry.startswith("."):
            continue
        name = entry[: -len(".json")]
        if loc.is_local and not _held_locally(loc.path(BUILDS_DIR, entry)):
            continue
        try:
            body = json.loads(loc.read(BUILDS_DIR, entry))
            heartbeat = float(body["heartbeat"])
            float(body["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged or vanished lease holds nothing
        if not isinstance(body, dict) or body.get("name") != name:
            continue
        if not loc.is_local and now - heartbeat > LEASE_TTL:
            continue
        out[name] = body
    return out


# A forked child (a build's pool worker, a DataLoader worker) inherits the lease files' open
# descriptions and so their flocks: after a SIGKILL of the holder, its orphaned workers would
# keep the destination "being written" until they exit. The child closes its copies at once;
# only the process that took a lease holds it.
_LOCKED: weakref.WeakSet[Lease] = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    for lease in list(_LOCKED):
        if lease._fd is not None:
            os.close(lease._fd)
            lease._fd = None
    _LOCKED.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)
