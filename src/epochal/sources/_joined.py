"""One gather over the columns of several array sources, as if they were one array.

A batch drawn from several in-memory or memory-mapped sources (a mixture, a concat) would
otherwise be gathered per source and then copied into batch order: two passes over the
batch, the second into freshly allocated memory. When every source is an
:class:`~epochal.sources.ArraySource` whose columns are C-contiguous with the same dtype
and record shape, :class:`JoinedColumns` reads each column of the whole batch in one
pass, in batch order, over a view that spans every source's buffer:

- **rows**: when every source's buffer starts a whole number of records after the lowest
  one (always the case for slices of one array, and for most 1-D numeric columns), the
  span is one C-contiguous array of records, and the batch is one ``numpy.take`` (the
  same gather as one array);
- **bytes**: otherwise, an :class:`~epochal._gather.AddressSpace` with an item at every
  byte, and one fancy-index of record addresses (about 5% slower than ``take``).

The views are built lazily in each process (addresses differ after ``spawn``); the
sources they cover are referenced by the concat, so their buffers stay mapped. Indices
are bounds-checked by the caller before they reach a view.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from epochal._gather import AddressSpace

__all__ = ["JoinedColumns"]


class _Column(NamedTuple):
    name: str
    view: np.ndarray  # rows: records of the span; bytes: an item at every byte
    shifts: np.ndarray  # per source: what to add to a concat index (a row or a byte address)
    shift: int | None  # the shift when every source has the same (sources laid out in order)
    scale: int  # 1 for rows; the record size in bytes for bytes
    dtype: np.dtype
    shape: tuple[int, ...]


class JoinedColumns:
    """Gathers records of several array sources, by index into their concatenation."""

    def __init__(self, sources: tuple[Any, ...]) -> None:
        self._sources = sources
        sizes = [len(s) for s in sources]
        self._offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self._pid = -1
        self._columns: list[_Column] = []

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
            shape = array.shape[1:]
            row = array.itemsize * int(np.prod(shape, dtype=np.int64))
            space = AddressSpace((a.ctypes.data, a.nbytes) for a in arrays)
            starts = np.array([a.ctypes.data - space.lo for a in arrays], dtype=np.int64)
            if row and not (starts % row).any() and (space.hi - space.lo) % row == 0:
                view = np.ndarray(
                    ((space.hi - space.lo) // row, *shape), dtype=array.dtype, buffer=space.raw
                )
                view.flags.writeable = False
                shifts, scale = starts // row - self._offsets, 1
            else:
                view = space.items(row)
                shifts, scale = starts - self._offsets * row, row
            shift = int(shifts[0]) if (shifts == shifts[0]).all() else None
            self._columns.append(_Column(name, view, shifts, shift, scale, array.dtype, shape))
        self._pid = os.getpid()

    def _which(self, indices: np.ndarray) -> np.ndarray:
        """The source number of each index."""
        if len(self._offsets) == 2:  # a comparison is 4x cheaper than a search
            return (indices >= self._offsets[1]).view(np.uint8)
        return np.searchsorted(self._offsets, indices, side="right") - 1

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Column arrays of the concatenation's records ``indices`` (int64, in range)."""
        if self._pid != os.getpid():
            self._build()
        which: np.ndarray | None = None
        out = {}
        for column in self._columns:
            if column.shift == 0 and column.scale == 1:  # slices of one array, in order
                positions = indices
            elif column.shift is not None:  # sources laid out in order: no lookup needed
                positions = indices * column.scale + column.shift
            else:
                if which is None:
                    which = self._which(indices)
                positions = indices * column.scale + column.shifts[which]
            if column.scale == 1:
                out[column.name] = np.take(column.view, positions, axis=0)
            else:
                rows = column.view[positions]
                out[column.name] = rows.view(column.dtype).reshape(len(indices), *column.shape)
        return out
