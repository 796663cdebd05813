"""Where a store lives: an fsspec filesystem and a root path, with atomic writes."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from epochal._per_process import PerProcess
from epochal.store._errors import StoreError

__all__ = ["Location", "locate"]


class Location:
    """A store's root: ``url`` as the user gave it, ``fs`` and ``root`` as fsspec sees it.

    The filesystem object is made again in each process (and after unpickling): fsspec
    filesystems for object stores hold event loops and connections that must not cross
    a ``fork``.
    """

    def __init__(self, url: str, root: str, storage_options: dict[str, Any], fs: Any) -> None:
        self.url = url
        self.root = root
        self.storage_options = storage_options
        self._fs = PerProcess(self._connect, fs)

    def _connect(self) -> Any:
        return fsspec.core.url_to_fs(self.url, **self.storage_options)[0]

    @property
    def fs(self) -> Any:
        return self._fs.get()

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def read(self, *parts: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(*parts)))

    def put(self, data: Any, *parts: str) -> None:
        """Write ``data`` so that readers see the old file or the whole new one, never a part.

        Local: a temporary file in the same directory, fsync, then ``os.replace``. Object
        stores: a single PUT, which is atomic per object.
        """
        path = self.path(*parts)
        if not self.is_local:
            self.fs.pipe_file(path, bytes(data))
            return

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        _replace(path, write)

    def put_encoded(self, encode: Callable[[Any], None], *parts: str) -> Any:
        """Write the file that ``encode(stream)`` writes to a pyarrow output stream, as
        atomically as :meth:`put`, and return its bytes (a ``pyarrow.Buffer``).

        Local files are encoded straight into the temporary file and returned memory-mapped:
        no copy of the bytes in memory (a shard of tens of MiB is otherwise encoded into a
        growing buffer, then copied to the file, both into freshly faulted memory: ~30% of
        the last shard's flush, which no worker can overlap).
        """
        import pyarrow as pa

        path = self.path(*parts)
        if not self.is_local:
            sink = pa.BufferOutputStream()
            encode(sink)
            data = sink.getvalue()
            self.fs.pipe_file(path, data.to_pybytes())
            return data

        def write(tmp: str) -> None:
            with pa.OSFile(tmp, "wb") as out:
                encode(out)

        _replace(path, write)
        return pa.memory_map(path).read_buffer()  # our own name: no other build writes it

    def listdir(self, *parts: str) -> list[str]:
        """Base names of the files under ``parts`` (empty when the folder does not exist)."""
        path = self.path(*parts)
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(os.path.basename(str(e).rstrip("/")) for e in entries)

    def remove(self, *parts: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(*parts))


def _replace(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, fsync it, rename it to ``path`` and
    make the rename durable: readers see the old file or the whole new one."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def locate(url: str | os.PathLike[str], **storage_options: Any) -> Location:
    """The fsspec filesystem and root path for a store URL or local path."""
    text = os.fspath(url)
    if not text:
        raise StoreError("a store location must be a path or URL, got an empty string")
    try:
        fs, root = fsspec.core.url_to_fs(text, **storage_options)
    except (ImportError, ValueError) as err:
        raise StoreError(f"cannot reach store {text!r}: {err}") from err
    if isinstance(fs, LocalFileSystem):
        root = os.path.abspath(root)
    return Location(text, root, dict(storage_options), fs)
