"""One gather over the columns of several array sources, as if they were one array.

A batch drawn from several in-memory or memory-mapped sources (a mixture, a concat) would
otherwise be gathered per source and then copied into batch order: two passes over the
batch, the second into freshly allocated memory. When every source is an
:class:`~epochal.sources.ArraySource` whose columns are C-contiguous with the same dtype
and record shape, :class:`JoinedColumns` reads each column of the whole batch in one
fancy-index over an :class:`~epochal._gather.AddressSpace` that spans every source's
buffer, in batch order: the same single pass as one array.

The address space is built lazily in each process (addresses differ after ``spawn``);
the sources it covers are referenced by the concat, so their buffers stay mapped.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from epochal._gather import AddressSpace

__all__ = ["JoinedColumns"]


class JoinedColumns:
    """Gathers ``(source number, local index)`` pairs of several array sources per column."""

    def __init__(self, sources: tuple[Any, ...]) -> None:
        self._sources = sources
        self._pid = -1
        self._columns: list[tuple[str, np.ndarray, np.ndarray, np.dtype, tuple[int, ...]]] = []

    @staticmethod
    def applies(sources: tuple[Any, ...]) -> bool:
        """Whether every source is a plain array source with matching contiguous columns."""
        from epochal.sources._arrays import ArraySource

        if len(sources) < 2 or not all(type(s) is ArraySource for s in sources):
            return False
        first = sources[0].columns
        for source in sources:
            columns = source.columns
            if list(columns) != list(first):
                return False
            for name, array in columns.items():
                if (
                    not array.flags.c_contiguous
                    or array.dtype != first[name].dtype
                    or array.shape[1:] != first[name].shape[1:]
                    or array.dtype.hasobject
                ):
                    return False
        return True

    def _build(self) -> None:
        self._columns = []
        for name, array in self._sources[0].columns.items():
            arrays = [s.columns[name] for s in self._sources]
            row = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
            space = AddressSpace((a.ctypes.data, a.nbytes) for a in arrays)
            starts = np.array([a.ctypes.data - space.lo for a in arrays], dtype=np.int64)
            self._columns.append((name, space.items(row), starts, array.dtype, array.shape[1:]))
        self._pid = os.getpid()

    def gather(self, which: np.ndarray, local: np.ndarray) -> dict[str, np.ndarray]:
        """Column arrays of the records ``local`` of sources ``which`` (bounds-checked before)."""
        if self._pid != os.getpid():
            self._build()
        out = {}
        for name, items, starts, dtype, shape in self._columns:
            rows = items[starts[which] + local * items.itemsize]
            out[name] = rows.view(dtype).reshape(len(local), *shape)
        return out
