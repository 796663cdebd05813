"""Columns between Python records and Arrow arrays, both ways, without per-row work on reads.

Write side: :class:`ColumnBuilder` checks each value against its :class:`Column` and
accumulates a shard's worth, then emits one Arrow array. Read side: :class:`ColumnView`
wraps one shard's Arrow array as numpy views of its buffers (zero copy from the memory
map) and gathers a batch with one fancy-index per shard (fixed-size columns) or from the
offsets buffer (variable-size columns).

Storage per kind:
    scalar int/uint/float  -> Arrow primitive (int64, float32, ...)
    scalar bool            -> Arrow bool (bit-packed; unpacked once per shard per process)
    array int/uint/float   -> Arrow FixedSizeList<primitive>[prod(shape)]
    array/scalar otherwise -> Arrow FixedSizeBinary[itemsize] (bool arrays, complex)
    bytes / str            -> Arrow large_binary / large_string
    list int/uint/float    -> Arrow large_list<primitive> (a variable-length 1-D array)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa

from epochal.store._errors import CorruptStoreError, StoreError
from epochal.store._format import Column, infer_column

__all__ = ["ColumnBuilder", "ColumnView", "arrow_schema", "arrow_type", "as_records"]

# kinds of value (numpy dtype.kind letters) a scalar/array column of each kind accepts
_ACCEPTS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "c": "iufc"}


def _primitive(column: Column) -> bool:
    """Whether the column's dtype maps to an Arrow primitive (else FixedSizeBinary)."""
    return column.numpy_dtype.kind in "iuf"


def arrow_type(column: Column) -> pa.DataType:
    """The Arrow type a column is stored as."""
    if column.kind == "bytes":
        return pa.large_binary()
    if column.kind == "str":
        return pa.large_string()
    dtype = column.numpy_dtype
    if column.kind == "list":
        return pa.large_list(pa.from_numpy_dtype(dtype))
    if column.kind == "scalar":
        if dtype.kind == "b":
            return pa.bool_()
        return pa.from_numpy_dtype(dtype) if _primitive(column) else pa.binary(dtype.itemsize)
    if _primitive(column):
        return pa.list_(pa.from_numpy_dtype(dtype), int(np.prod(column.shape, dtype=np.int64)))
    return pa.binary(column.itemsize)


def numpy_array(flat: np.ndarray) -> pa.Array:
    """``pa.array(flat)`` for a 1-D numpy array, the same buffers, without ``pa.array``.

    ``pa.array`` makes pyarrow import pandas on its first call in a process when pandas is
    installed: ~0.5 s in every ``epochal build`` process and in each of its workers, the
    same wall time for any number of workers, so it capped the parallel speed-up.
    """
    flat = np.ascontiguousarray(flat)
    if flat.dtype.kind == "b":
        bits = np.packbits(flat.view(np.uint8), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(flat), [None, pa.py_buffer(bits)])
    if flat.dtype.kind in "iuf" and flat.dtype.isnative:
        type_ = pa.from_numpy_dtype(flat.dtype)
        return pa.Array.from_buffers(type_, len(flat), [None, pa.py_buffer(flat)])
    return pa.array(flat)


def binary_array(values: list[Any], type_: pa.DataType) -> pa.Array:
    """``pa.array(values, type_)`` for ``bytes``-like or ``str`` values and a large binary
    or string type, the same buffers, without ``pa.array`` (see :func:`numpy_array`)."""
    raw = [v.encode() for v in values] if pa.types.is_large_string(type_) else values
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([memoryview(v).nbytes for v in raw], out=offsets[1:])
    data = b"".join(raw)
    return pa.Array.from_buffers(type_, len(raw), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The Arrow schema of a store's shards (non-nullable fields, in manifest order)."""
    return pa.schema([pa.field(c.name, arrow_type(c), nullable=False) for c in columns])


def _value_kind(value: Any) -> str | None:
    """numpy dtype.kind of a scalar value, or None when it is not a number."""
    if isinstance(value, (bool, np.bool_)):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    if isinstance(value, complex):
        return "c"
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        return value.dtype.kind
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray[{value.dtype}, {list(value.shape)}]"
    if isinstance(value, np.generic):
        return f"numpy {value.dtype}"
    return type(value).__name__


class ColumnBuilder:
    """Collects one column's values for the shard being written."""

    def __init__(self, column: Column) -> None:
        self.column = column
        self.nbytes = 0
        self._values: list[Any] = []
        self._raw = bytearray()  # array and list columns: the records' bytes, back to back
        self._lengths: list[int] = []  # list columns: elements per record
        self._n = 0
        # per-value checks run for every record: look everything up once
        self._kind = column.kind
        self._dtype = column.numpy_dtype if column.dtype is not None else None
        self._itemsize = column.itemsize if column.dtype is not None else 0
        self._accepts = (
            _ACCEPTS[self._dtype.kind]
            if self._dtype is not None and self._dtype.kind in _ACCEPTS
            else ""
        )

    def append(self, value: Any, record: int) -> int:
        """Add one value and return its size in bytes; raises StoreError naming ``record`` if it does not fit."""
        kind = self._kind
        if kind == "array":
            if not isinstance(value, np.ndarray) or value.shape != self.column.shape:
                self._mismatch(value, record)
            if value.dtype != self._dtype:
                assert self._dtype is not None
                if value.dtype.newbyteorder("=") != self._dtype.newbyteorder("="):
                    self._mismatch(value, record)
                value = value.astype(self._dtype)
            self._raw += value.data.cast("B") if value.flags.c_contiguous else value.tobytes()
            size = self._itemsize
        elif kind == "list":
            value = self._list_value(value, record)
            self._raw += value.data.cast("B") if value.size else b""
            self._lengths.append(value.size)
            size = value.size * self._itemsize + 8
        elif kind == "scalar":
            value_kind = _value_kind(value)
            if value_kind is None or value_kind not in self._accepts:
                self._mismatch(value, record)
            self._values.append(value)
            size = self._itemsize
        elif kind == "bytes":
            if not isinstance(value, (bytes, bytearray, memoryview)):
                self._mismatch(value, record)
            self._values.append(value)
            size = len(value) + 8
        else:
            if not isinstance(value, str):
                self._mismatch(value, record)
            self._values.append(value)
            size = len(value) + 8
        self._n += 1
        self.nbytes += size
        return size

    def _list_value(self, value: Any, record: int) -> np.ndarray:
        """A list column's value as a contiguous 1-D array of its dtype, or StoreError."""
        dtype = self._dtype
        assert dtype is not None
        if isinstance(value, np.ndarray):
            array = value
        elif isinstance(value, (list, tuple)) and all(
            type(v) in (int, float) for v in value
        ):  # numbers only: numpy would also take strings or nested lists
            try:
                array = np.asarray(value) if value else np.zeros(0, dtype=dtype)
            except OverflowError:  # an int past 64 bits
                self._mismatch(value, record)
        else:
            self._mismatch(value, record)
        if array.ndim != 1 or array.dtype.kind not in self._accepts:
            self._mismatch(value, record)
        if array.dtype == dtype:
            return np.ascontiguousarray(array)
        converted = array.astype(dtype)
        if array.dtype.kind in "iu" and not np.array_equal(converted, array):
            bad = array[converted != array][0]
            raise StoreError(
                f"record {record}: column {self.column.name!r} holds {dtype} elements; "
                f"{bad} does not fit"
            )
        return converted

    def _mismatch(self, value: Any, record: int) -> NoReturn:
        raise StoreError(
            f"record {record}: column {self.column.name!r} expects {self.column.describe()} "
            f"(inferred from the first record), got {_type_name(value)}"
        )

    def finish(self) -> pa.Array:
        """The collected values as one Arrow array; the builder is empty afterwards."""
        column, n = self.column, self._n
        if column.kind in ("bytes", "str"):
            array = binary_array(self._values, arrow_type(column))
        elif column.kind == "list":
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(self._lengths, out=offsets[1:])
            values = numpy_array(np.frombuffer(self._raw, dtype=column.numpy_dtype))
            array = pa.LargeListArray.from_arrays(numpy_array(offsets), values)
            self._lengths = []
        elif column.kind == "scalar":
            try:
                values = np.asarray(self._values, dtype=column.numpy_dtype)
            except OverflowError as err:
                raise StoreError(
                    f"column {column.name!r}: a value does not fit {column.dtype}: {err}"
                ) from err
            array = self._from_numpy(values)
        else:
            array = self._from_numpy(np.frombuffer(self._raw, dtype=column.numpy_dtype))
        self._values, self._raw, self._n, self.nbytes = [], bytearray(), 0, 0
        assert len(array) == n, (len(array), n)
        return array

    def _from_numpy(self, flat: np.ndarray) -> pa.Array:
        column = self.column
        type_ = arrow_type(column)
        if column.kind == "scalar" and column.numpy_dtype.kind == "b":
            return numpy_array(flat.astype(bool, copy=False))
        if pa.types.is_fixed_size_binary(type_):
            raw = np.ascontiguousarray(flat).view(np.uint8)
            n = len(raw) // type_.byte_width
            return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(raw)])
        values = numpy_array(flat)
        if column.kind == "scalar":
            return values
        return pa.FixedSizeListArray.from_arrays(values, type_.list_size)


class ColumnView:
    """One shard's column as numpy views of its Arrow buffers (zero copy from the map).

    Construction checks the buffers' structure (no nulls, no offsets, buffers long enough,
    variable-size offsets start at 0, never decrease and stay inside the data buffer) and
    raises CorruptStoreError naming ``shard`` otherwise: a damaged layout is never read,
    and every address a batch gather computes from these views lies inside a buffer.

    Attributes:
        rows: scalar/array kinds: ``(n,)`` array with one item per record (an opaque
            ``void`` item of the record's bytes for arrays, so numpy copies each record
            with one memcpy).
        offsets: bytes/str/list kinds: ``(n + 1,)`` int64 offsets into ``data``, in
            units of ``scale`` bytes (1; a list column's element size).
        data: bytes/str/list kinds: the ``uint8`` data buffer.
        scale: bytes per offset unit.
    """

    def __init__(self, column: Column, array: pa.Array, *, shard: str) -> None:
        self.column = column
        self.rows: np.ndarray | None = None
        self.offsets: np.ndarray | None = None
        self.data: np.ndarray | None = None
        self.scale = column.itemsize if column.kind == "list" else 1
        n = len(array)
        if array.null_count or array.offset:
            raise CorruptStoreError(f"shard {shard}: column {column.name!r} has nulls or an offset")
        buffers = array.buffers()
        if column.kind in ("bytes", "str", "list"):
            # a list's buffers: validity, offsets (in elements), the values' validity, data
            data = buffers[-1]
            if column.kind == "list" and (buffers[2] is not None or array.values.offset):
                raise CorruptStoreError(
                    f"shard {shard}: column {column.name!r} has nulls or an offset"
                )
            if buffers[1] is None or buffers[1].size < (n + 1) * 8:
                raise CorruptStoreError(
                    f"shard {shard}: column {column.name!r} has a short offsets buffer"
                )
            offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1)
            size = 0 if data is None else data.size
            if (
                offsets[0] != 0
                or offsets[-1] > size // self.scale
                or np.any(offsets[1:] < offsets[:-1])
            ):
                raise CorruptStoreError(
                    f"shard {shard}: column {column.name!r} has damaged offsets"
                )
            self.offsets = offsets
            self.data = np.frombuffer(data, dtype=np.uint8) if size else np.zeros(1, dtype=np.uint8)
            self._memory = self.data.data  # the array's own memoryview
            return
        dtype = column.numpy_dtype
        if column.kind == "scalar" and dtype.kind == "b":
            self.rows = array.to_numpy(zero_copy_only=False)  # bit-packed: unpacked once per shard
            return
        buffer = buffers[-1]  # FixedSizeList: the child's data buffer; primitive/binary: the data
        itemsize = column.itemsize
        if buffer is None or buffer.size < n * itemsize:
            raise CorruptStoreError(
                f"shard {shard}: column {column.name!r} has a short data buffer"
            )
        self.rows = np.frombuffer(buffer, dtype=np.dtype((np.void, itemsize)), count=n)

    def regions(self) -> list[tuple[int, int]]:
        """(address, bytes) of every buffer a gather may read."""
        arrays = [self.rows] if self.rows is not None else [self.offsets, self.data]
        return [(a.ctypes.data, a.nbytes) for a in arrays if a is not None]

    def get(self, i: int) -> Any:
        """Record ``i`` of this shard: a numpy scalar, a new array, bytes or str."""
        if self.rows is not None:
            value = as_records(self.column, self.rows[i : i + 1])[0]
            return value.copy() if self.column.kind == "array" else value
        assert self.offsets is not None
        a, b = int(self.offsets[i]) * self.scale, int(self.offsets[i + 1]) * self.scale
        raw = self._memory[a:b]
        if self.column.kind == "list":
            return np.frombuffer(raw, dtype=self.column.numpy_dtype).copy()
        return str(raw, "utf-8") if self.column.kind == "str" else bytes(raw)

    def flat(self) -> np.ndarray:
        """A list column's elements of every record, back to back (a view of the map)."""
        assert self.column.kind == "list" and self.offsets is not None and self.data is not None
        count = int(self.offsets[-1])
        return np.frombuffer(self.data, dtype=self.column.numpy_dtype, count=count)


def as_records(column: Column, items: np.ndarray) -> np.ndarray:
    """Opaque record items (see :attr:`ColumnView.rows`) as the column's dtype and shape."""
    if items.dtype.kind != "V":
        return items
    return items.view(column.numpy_dtype).reshape((len(items), *column.shape))


def _require_mapping(record: Any, number: int) -> None:
    if not isinstance(record, Mapping):
        raise StoreError(
            f"record {number} is a {type(record).__name__}; records must be dicts of columns"
        )


def infer_columns(
    record: Any, number: int, lists: frozenset[str] = frozenset()
) -> tuple[Column, ...]:
    """The columns the first record fixes, with the row writer's checks and messages.

    Columns named in ``lists`` are list columns (variable-length 1-D arrays) even when
    their first value is a numpy array, which would otherwise fix its shape.
    """
    _require_mapping(record, number)
    try:
        columns = tuple(infer_column(str(k), v, as_list=str(k) in lists) for k, v in record.items())
    except StoreError as err:
        raise StoreError(f"record {number}: {err}") from None
    if not columns:
        raise StoreError("record 0 has no columns; records must be non-empty dicts")
    return columns


def check_record(record: Any, number: int, names: tuple[str, ...], name_set: set[str]) -> None:
    """A record must be a dict with exactly the first record's columns."""
    _require_mapping(record, number)
    if record.keys() != name_set:
        raise StoreError(
            f"record {number} has columns {sorted(map(str, record))}, expected {sorted(names)} "
            f"(from the first record)"
        )
