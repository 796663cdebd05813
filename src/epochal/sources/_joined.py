"""One gather over the columns of several sources, as if they were one array.

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

Other sources whose columns all have fixed-size records (local stores) take part through
two private hooks, and :class:`AddressedColumns` gathers a batch of theirs by byte
address in one pass too:

- ``_record_layout() -> tuple[RecordLayout, ...] | None``: each column's record size,
  dtype and shape (None when some column is variable-size);
- ``_address_table() -> (starts, bases, regions)``: the source's records as pieces laid
  out in memory (a store's shards, mapped by the call): piece ``p`` holds records
  ``starts[p]..starts[p+1]-1``, whose bytes in column ``j`` start at the absolute address
  ``bases[j][p]``, one record every ``itemsize`` bytes; ``regions`` are the
  ``(address, size)`` of every buffer those records lie in.

The views are built lazily in each process (addresses differ after ``spawn``) and are
never pickled; the sources they cover are referenced by the concat, so their buffers stay
mapped. Indices are bounds-checked by the caller before they reach a view.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from epochal._gather import AddressSpace, RecordLayout

__all__ = ["AddressedColumns", "JoinedColumns"]


def _which(offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The source number of each index, given the sources' first indices ``offsets``."""
    if len(offsets) == 2:  # a comparison is 4x cheaper than a search
        return (indices >= offsets[1]).view(np.uint8)
    return np.searchsorted(offsets, indices, side="right") - 1


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

    def __getstate__(self) -> dict[str, Any]:
        # the views span other memory of this process: never pickle them
        return {**self.__dict__, "_pid": -1, "_columns": []}

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
                    which = _which(self._offsets, indices)
                positions = indices * column.scale + column.shifts[which]
            if column.scale == 1:
                out[column.name] = np.take(column.view, positions, axis=0)
            else:
                rows = column.view[positions]
                out[column.name] = rows.view(column.dtype).reshape(len(indices), *column.shape)
        return out


class AddressedColumns:
    """Gathers records of sources that map their records to memory piece by piece (see
    the module docstring), by index into their concatenation, in one pass per column.

    The sources' pieces (a store's shards, an array) make one table: record ``i`` of
    piece ``p`` is at ``base[p] + (i - start[p]) * itemsize`` in each column, which is
    the same arithmetic as one store's gather, over every source's shards at once.
    """

    def __init__(self, sources: tuple[Any, ...], layout: tuple[RecordLayout, ...]) -> None:
        self._sources = sources
        self._layout = layout
        sizes = [len(s) for s in sources]
        self._offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self._pid = -1
        self._space: AddressSpace | None = None
        self._starts = np.zeros(1, dtype=np.int64)
        self._bases: list[np.ndarray] = []

    @staticmethod
    def layout_of(sources: tuple[Any, ...]) -> tuple[RecordLayout, ...] | None:
        """The sources' common record layout, or None when they have none in common."""
        if len(sources) < 2 or not all(
            callable(getattr(s, "_address_table", None)) for s in sources
        ):
            return None
        layouts = [s._record_layout() for s in sources]
        first = layouts[0]
        return first if first is not None and all(lay == first for lay in layouts) else None

    def __getstate__(self) -> dict[str, Any]:
        # the table and the view hold addresses of this process: never pickle them
        return {**self.__dict__, "_pid": -1, "_space": None, "_bases": []}

    def _build(self) -> None:
        starts: list[np.ndarray] = []
        bases: list[list[np.ndarray]] = [[] for _ in self._layout]
        regions: list[tuple[int, int]] = []
        for offset, source in zip(self._offsets.tolist(), self._sources, strict=True):
            first, columns, mapped = source._address_table()
            starts.append(first[:-1] + offset)
            for per_column, base in zip(bases, columns, strict=True):
                per_column.append(base)
            regions.extend(mapped)
        self._space = AddressSpace(regions)
        self._starts = np.concatenate(starts)
        self._bases = [np.concatenate(b) - self._space.lo for b in bases]
        self._pid = os.getpid()

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Column arrays of the concatenation's records ``indices`` (int64, in range)."""
        if self._pid != os.getpid():
            self._build()
        assert self._space is not None
        piece = np.searchsorted(self._starts, indices, side="right") - 1
        local = indices - self._starts[piece]
        n = len(indices)
        columns = {}
        for column, base in zip(self._layout, self._bases, strict=True):
            items = self._space.items(column.itemsize)[local * column.itemsize + base[piece]]
            columns[column.name] = items.view(column.dtype).reshape(n, *column.shape)
        return columns
