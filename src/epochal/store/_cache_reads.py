"""The remote cache's reads: records gathered from cached units with ``pread``.

:class:`CachedReads` is the part of :class:`~epochal.store._remote.ShardCache` that reads
a batch: its units are fetched if missing (concurrently, in chunks of half the cache),
then each unit's records are read with a few ``pread`` calls per column and the file is
closed at once, so nothing stays mapped or open and an evicted unit frees its blocks.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from epochal.store._blocks import ShardHead
from epochal.store._cache_files import _alloc
from epochal.store._cache_prefetch import Prefetch
from epochal.store._columns import as_records
from epochal.store._errors import CorruptStoreError
from epochal.store._format import Column

__all__ = ["CachedReads"]

_READ_GAP = 64 << 10  # records closer than this in one unit are read with one pread


class CachedReads(Prefetch):
    """Batches read from the cached units (a base of ``ShardCache``)."""

    columns: tuple[Column, ...]

    def where(self, k: int) -> str:
        raise NotImplementedError  # ShardCache's

    def gather(self, idx: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray | list[Any]]:
        """Records ``idx`` (in range) as columns, read from the cached units with ``pread``."""
        n = len(idx)
        columns = self.columns
        fixed: list[np.ndarray | None] = []
        var: list[list[Any] | None] = []
        for column in columns:
            if column.kind in ("bytes", "str", "list"):
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
                array = column.numpy_dtype if column.kind == "list" else None
                for p, a, length in zip(where.tolist(), at.tolist(), lengths, strict=True):
                    piece = memory[a : a + length]
                    if array is not None:
                        values[p] = np.frombuffer(piece, dtype=array).copy()
                    else:
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
