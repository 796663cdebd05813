"""The local shard cache for stores on object storage (any non-local fsspec URL).

A shard is fetched on first use into ``<cache_dir>/<hash of the store URL>/`` and only
then memory-mapped. Guarantees:

- **Verified**: the download is streamed through xxh3-64 into a temporary file and renamed
  into place only when its size and checksum match the manifest; otherwise a
  CorruptStoreError names the shard. A file in the cache is therefore whole and correct
  (as written by this code); later uses check its size only.
- **Atomic**: readers only ever see complete files (``os.replace`` of a finished temp file).
- **No double download, no corruption across processes**: a per-shard ``fcntl.flock``
  serialises fetchers of the same shard; the second one finds the file in place.
- **Size-bounded**: after each download, least-recently-used shards (by mtime, refreshed on
  every first use per process) are evicted until the cache is under ``max_bytes``. An evicted
  file stays readable by processes that already mapped it (POSIX unlink semantics); the
  reader refetches a shard that vanished between fetch and map.

Cache files are named by checksum, so a store rebuilt under the same URL never reuses a
stale shard.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator

import xxhash

from epochal.store._errors import CorruptStoreError
from epochal.store._format import SHARDS_DIR, Shard
from epochal.store._fs import Location

__all__ = ["DEFAULT_CACHE_SIZE", "ShardCache", "default_cache_dir", "hash_file"]

DEFAULT_CACHE_SIZE = 64 << 30  # bytes; override with cache_size= or EPOCHAL_CACHE_SIZE
_CHUNK = 8 << 20


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


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


class ShardCache:
    """Fetches shards of one remote store into a local directory; see the module docstring."""

    def __init__(
        self, loc: Location, *, cache_dir: str | None = None, max_bytes: int | None = None
    ) -> None:
        self.loc = loc
        self.root = os.path.abspath(cache_dir or default_cache_dir())
        self.dir = os.path.join(self.root, xxhash.xxh3_64_hexdigest(loc.url.rstrip("/").encode()))
        env = os.environ.get("EPOCHAL_CACHE_SIZE")
        self.max_bytes = (
            max_bytes if max_bytes is not None else int(env) if env else DEFAULT_CACHE_SIZE
        )
        if self.max_bytes < 1:
            raise ValueError(f"cache_size must be a positive number of bytes, got {self.max_bytes}")

    def local_path(self, shard: Shard) -> str:
        return os.path.join(self.dir, f"{shard.xxh3}-{shard.name}")

    def fetch(self, shard: Shard, *, recheck: bool = False) -> str:
        """Local path of ``shard``, downloading and verifying it if needed.

        Args:
            shard: the manifest's entry for the shard.
            recheck: hash a cached file again instead of trusting its size.
        """
        path = self.local_path(shard)
        if not recheck and _size(path) == shard.bytes:
            with contextlib.suppress(OSError):
                os.utime(path)
            return path
        os.makedirs(self.dir, exist_ok=True)
        with _locked(path + ".lock"):
            if _size(path) == shard.bytes and (
                not recheck or hash_file(path) == (shard.bytes, shard.xxh3)
            ):
                return path
            self._download(shard, path)
        self._evict(keep=path)
        return path

    def _download(self, shard: Shard, path: str) -> None:
        remote = self.loc.path(SHARDS_DIR, shard.name)
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        digest = xxhash.xxh3_64()
        size = 0
        try:
            with self.loc.fs.open(remote, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
            if (size, digest.hexdigest()) != (shard.bytes, shard.xxh3):
                raise CorruptStoreError(
                    f"shard {SHARDS_DIR}/{shard.name} of {self.loc.url} is corrupt: {size} bytes with xxh3 "
                    f"{digest.hexdigest()}, the manifest says {shard.bytes} bytes with xxh3 {shard.xxh3}"
                )
            os.replace(tmp, path)
        except FileNotFoundError as err:
            raise CorruptStoreError(
                f"shard {SHARDS_DIR}/{shard.name} of {self.loc.url} is missing"
            ) from err
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _evict(self, *, keep: str) -> None:
        """Remove least-recently-used shards of any store in the cache until under the bound."""
        with _locked(os.path.join(self.root, ".evict.lock")):
            files: list[tuple[float, int, str]] = []
            for entry in os.scandir(self.root):
                if not entry.is_dir():
                    continue
                for f in os.scandir(entry.path):
                    if f.name.endswith(".arrow"):
                        with contextlib.suppress(FileNotFoundError):
                            st = f.stat()
                            files.append((st.st_mtime, st.st_size, f.path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                total -= size
