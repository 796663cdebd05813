"""Real disk use of a cache: a small dedicated tmpfs, and its used bytes sampled via statvfs.

A cache directory's file sizes do not show what the cache really holds on disk: a file
that was deleted while still open or memory-mapped keeps its blocks until the last
process lets go. ``statvfs`` of a filesystem that holds nothing but the cache does show
it, so disk-bound tests mount a tmpfs of their own (:func:`tmpfs`, when the user may
mount) and watch :func:`used_bytes` with a :class:`PeakSampler`. A tmpfs of ``size``
bytes also makes the bound physical: writing past it fails with ENOSPC.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["PeakSampler", "cannot_mount_reason", "tmpfs", "tree_bytes", "used_bytes"]


def used_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes in use on the filesystem holding ``path`` (``statvfs``: blocks - free blocks)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """Sum of the sizes of the regular files under ``path`` (what ``du`` of names would see)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def cannot_mount_reason() -> str | None:
    """Why this process cannot mount a tmpfs, or None when it can (root and ``mount`` exists)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a tmpfs needs root (CAP_SYS_ADMIN); this process is not root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mounting a tmpfs needs the mount and umount commands, which are not on PATH"
    return None


@contextlib.contextmanager
def tmpfs(path: str | os.PathLike[str], size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes (rounded up to pages) on ``path``; unmount on exit.

    Args:
        path: an empty or missing directory (created).
        size: the filesystem's capacity in bytes.

    Raises:
        PermissionError: when the mount is refused; the message says why (tests skip on it).
    """
    reason = cannot_mount_reason()
    if reason:
        raise PermissionError(reason)
    mount = Path(path)
    mount.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(size)},mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PermissionError(f"mount -t tmpfs failed: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount
    finally:
        # a lazy unmount when busy: a still-running child must not keep the mount alive forever
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=True)
        with contextlib.suppress(OSError):
            mount.rmdir()


class PeakSampler:
    """Samples :func:`used_bytes` of ``path`` in a background thread and keeps the peak.

    Use as a context manager; ``baseline`` is the use at start, ``peak`` the highest sample
    (the final one included), ``peak_above_baseline`` their difference. Sampling every few
    milliseconds catches a peak that lasts longer than that; a test that needs every
    transient may also call :meth:`sample` at the moments it cares about.

    Args:
        path: any path on the filesystem to watch.
        interval: seconds between samples.
        measure: what to sample; :func:`tree_bytes` watches a directory's file sizes instead
            (where no dedicated filesystem is available; blind to deleted-but-open files).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        interval: float = 0.002,
        measure: Callable[[str], int] = used_bytes,
    ) -> None:
        self.path = os.fspath(path)
        self.interval = interval
        self.measure = measure
        self.baseline = self.peak = measure(self.path)
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def sample(self) -> int:
        """Take one sample now; returns it."""
        used = self.measure(self.path)
        with self._lock:
            self.samples += 1
            self.peak = max(self.peak, used)
        return used

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakSampler:
        self.baseline = self.peak = self.measure(self.path)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="disk-peak", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    @property
    def peak_above_baseline(self) -> int:
        """Peak minus the use at start, in bytes."""
        return self.peak - self.baseline
