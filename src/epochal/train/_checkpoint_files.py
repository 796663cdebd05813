"""The checkpoint directory's file protocol: atomic, checksummed writes and commit records.

A checkpoint of step S is two files: the payload ``step_<S>-<8 hex>.pt`` (``torch.save``
output, hashed with xxh3-64 while it is written) and, written after it, the commit record
``step_<S>.json`` naming the payload, its size and checksum. Each is written to a
same-directory temporary file, fsynced, then renamed into place, so a crash at any moment
leaves either the whole checkpoint or none of it. The Checkpointer
(``epochal.train.checkpoint``) decides what to write, when, and on which rank; this module
only writes files and checks commit records.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, cast

import torch
import xxhash

from epochal._errors import Error
from epochal.train._faults import pause_point

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointSaveError",
    "_atomic_write",
    "_atomic_write_json",
    "_commit_problem",
    "_fsync_dir",
]

FORMAT = "epochal.checkpoint"
VERSION = 1
_COMMIT = re.compile(r"^step_(\d{12})\.json$")
_PAYLOAD = re.compile(r"^step_(\d{12})-[0-9a-f]{8}\.pt$")
_TEMP_PREFIX = ".tmp-"


class CheckpointSaveError(Error):
    """A write of a checkpoint failed: the disk is full (any save), or any error of a
    background (``async_save=True``) write.

    A background failure is raised by the next ``save``, ``wait``, ``close`` (or anything
    else that waits for the write). ``path`` is the checkpoint file that was not written,
    ``__cause__`` the error. The previous checkpoints are untouched.
    """

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class _HashingWriter:
    """A file object that hashes every byte written through it (torch.save writes here)."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.hash = xxhash.xxh3_64()
        self.size = 0
        self.error: OSError | None = None  # torch.save hides it behind "unexpected pos ..."

    def write(self, data: Any) -> int:
        self.hash.update(data)
        try:
            n = self._f.write(data)
        except OSError as err:
            self.error = err
            raise
        self.size += n
        return n

    def flush(self) -> None:
        self._f.flush()


def _commit_problem(commit: Any, step: int) -> str | None:
    """What is wrong with the shape of a parsed commit record of ``step``, or None.

    The record is untrusted: its ``file`` must be a bare payload name of the same step
    (never a path, so never a file outside the directory), its numbers numbers.
    """
    if not isinstance(commit, dict):
        return f"expected a JSON object, got {type(commit).__name__}"
    if commit.get("format") != FORMAT:
        return f"format is {commit.get('format')!r}, expected {FORMAT!r}"
    name = commit.get("file")
    match = _PAYLOAD.match(name) if isinstance(name, str) else None
    if match is None or int(match.group(1)) != step:
        return (
            f"file {name!r} is not the name of a step {step} checkpoint file in this directory "
            f"(step_{step:012d}-<8 hex>.pt)"
        )
    for key, kind in (("bytes", int), ("xxh3_64", str), ("metrics", dict)):
        value = commit.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key} is {value!r}, expected a {kind.__name__}"
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in commit["metrics"].values()
    ):
        return f"metrics {commit['metrics']!r} are not all numbers"
    return None


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _no_space(path: Path, err: OSError) -> CheckpointSaveError:
    return CheckpointSaveError(
        f"cannot save checkpoint {path}: no space left for it ({err.strerror}: the disk holding "
        f"{path.parent} is full, or a quota or file size limit is reached); free space there or "
        f"save elsewhere. The previous checkpoints are untouched",
        path,
    )


def _atomic_write(path: Path, payload: Any, *, pause_step: int, durable: bool) -> tuple[int, str]:
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    writer: _HashingWriter | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(payload, cast("IO[bytes]", writer))  # a file object as torch needs one
            f.flush()
            if durable:
                os.fsync(f.fileno())
        pause_point("write", pause_step)
        os.replace(temp, path)
    except BaseException as err:
        Path(temp).unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else writer.error if writer else None
        if cause is not None and cause.errno in _NO_SPACE:
            raise _no_space(path, cause) from err
        raise
    return writer.size, writer.hash.hexdigest()


def _atomic_write_json(path: Path, data: Any, *, durable: bool) -> None:
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException as err:
        Path(temp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            raise _no_space(path, err) from err
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
