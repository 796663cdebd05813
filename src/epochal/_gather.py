"""One vectorised gather over many memory-mapped shards, by address.

A batch of records spread over k shards would need k fancy-indexes per column plus a
scatter into batch order: 2k numpy calls and two copies. Instead, :class:`AddressSpace`
is a numpy view over the range of virtual memory that holds every open shard's
buffers, with an item starting at EVERY byte (stride 1). A record is then an item at
(shard buffer address - start of the range + local index * record size), and a whole
column of a batch is one fancy-index, in batch order, one memcpy per record.

Safety: the view is only ever indexed at offsets inside buffers that
:class:`~epochal.store._columns.ColumnView` has bounds-checked (indices are checked against
the manifest's record counts first), and the shards' memory maps stay referenced, hence
mapped, for as long as the view that covers them. Nothing is ever written through it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = ["AddressSpace", "AddressTable", "Addressable", "RecordLayout"]


class RecordLayout(NamedTuple):
    """A fixed-size column as memory: each record is ``itemsize`` contiguous bytes that
    read as ``dtype`` with ``shape`` (what a gather by address needs to know)."""

    name: str
    itemsize: int
    dtype: np.dtype
    shape: tuple[int, ...]


AddressTable = tuple[np.ndarray, list[np.ndarray], list[tuple[int, int]]]
"""``(starts, bases, regions)``: a source's records as pieces of memory (see :class:`Addressable`)."""


@runtime_checkable
class Addressable(Protocol):
    """A source whose fixed-size columns can be gathered by address (the joined fast path).

    Sources whose columns all have fixed-size records (``from_arrays`` over C-contiguous
    arrays, local stores) implement these two hooks, and a concat or mixture of them reads
    a whole batch in one gather per column (``sources/_joined.py``). Both are private:
    users never call them.

    ``_record_layout()``: each column's :class:`RecordLayout` (record size, dtype and
    shape), or None when some column is variable-size or not contiguous (the source then
    takes the per-source path).

    ``_address_table()``: the source's records as pieces laid out in memory (an array;
    a store's shards, mapped by the call): piece ``p`` holds records
    ``starts[p]..starts[p+1]-1``, whose bytes in column ``j`` start at the absolute address
    ``bases[j][p]``, one record every ``itemsize`` bytes; ``regions`` are the
    ``(address, size)`` of every buffer those records lie in. The caller keeps the
    source, hence those buffers, alive for as long as it reads them.
    """

    def _record_layout(self) -> tuple[RecordLayout, ...] | None: ...

    def _address_table(self) -> AddressTable: ...


class AddressSpace:
    """A read-only window on the virtual memory from the lowest to the highest region."""

    def __init__(self, regions: Iterable[tuple[int, int]]) -> None:
        spans = [(address, address + size) for address, size in regions if size > 0]
        assert spans, "an address space needs at least one region"
        self.lo = min(a for a, _ in spans)
        self.hi = max(b for _, b in spans)
        # the whole range as one ctypes array: the buffer every view is built on
        self.raw = (ctypes.c_char * (self.hi - self.lo)).from_address(self.lo)
        self.memory = memoryview(self.raw).cast("B")  # slices copy bytes out of any region
        self._items: dict[int, np.ndarray] = {}

    def covers(self, regions: Iterable[tuple[int, int]]) -> bool:
        return all(self.lo <= a and a + size <= self.hi for a, size in regions if size > 0)

    def items(self, itemsize: int) -> np.ndarray:
        """A view with an ``itemsize``-byte opaque item starting at every byte offset."""
        view = self._items.get(itemsize)
        if view is None:
            count = self.hi - self.lo - itemsize + 1
            assert count > 0, (itemsize, self.hi - self.lo)
            view = np.ndarray(
                (count,),
                dtype=np.dtype((np.void, itemsize)),
                buffer=self.raw,  # type: ignore[arg-type]  # a ctypes array is a buffer
                strides=(1,),
            )
            view.flags.writeable = False
            self._items[itemsize] = view
        return view
