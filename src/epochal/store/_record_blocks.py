"""Blocks: many records at once, as Arrow arrays in the store's column types.

Engines hand data over in batches (a Ray block is an Arrow table, a Dask partition a
pandas frame, a pool worker's result a list of parsed records). A :class:`Block` holds
such a batch as one Arrow array per store column plus each record's size as the row
writer counts it, so that :func:`write_block_shards` cuts shards at exactly the records
where :func:`epochal.write` would: a store written from blocks has the same shards, the
same bytes and the same fingerprint as one written record by record.

Arrow columns of numbers, bools, strings, binary and fixed-shape lists/tensors of
numbers convert without touching a record in Python (:func:`from_arrow`); anything
else goes through the row writer's per-record checks (:func:`from_records`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from epochal.store._columns import ColumnBuilder, arrow_type, check_record, infer_columns
from epochal.store._errors import StoreError
from epochal.store._format import Column, Shard, infer_column

__all__ = [
    "Block",
    "Blocks",
    "as_block",
    "from_arrow",
    "from_numpy",
    "from_records",
    "write_block_shards",
]


@dataclass(frozen=True)
class Block:
    """Records ``[0, len)`` of a batch: one Arrow array per column, in the store's types.

    Attributes:
        columns: the store columns, in record order of keys.
        arrays: one array per column, of type ``arrow_type(column)``, without nulls.
        sizes: int64 bytes of each record as the row writer counts them (fixed-size
            values their item size, bytes their length + 8, str its characters + 8).
    """

    columns: tuple[Column, ...]
    arrays: tuple[pa.Array, ...]
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.sizes)

    def slice(self, start: int, stop: int) -> Block:
        return Block(
            self.columns,
            tuple(a.slice(start, stop - start) for a in self.arrays),
            self.sizes[start:stop],
        )


class Blocks:
    """An iterable of blocks (or anything :func:`as_block` takes) for :func:`epochal.write`.

    ``epochal.write(Blocks(tables), dest)`` writes the blocks' records in order, as
    ``epochal.write`` of the same records one by one would.
    """

    def __init__(self, blocks: Iterable[Any]) -> None:
        self.blocks = blocks

    def __iter__(self) -> Iterator[Block]:
        for item in self.blocks:
            block = as_block(item)
            if len(block):
                yield block


def as_block(data: Any, columns: tuple[Column, ...] | None = None) -> Block:
    """A :class:`Block` from an Arrow table/batch, a pandas frame, a dict of numpy columns
    or a list of record dicts.

    Args:
        data: the batch.
        columns: the columns the block must have (a list of records is checked against
            them value by value, like the row writer); by default taken from the data.
    """
    if isinstance(data, Block):
        block = data
    elif isinstance(data, (pa.Table, pa.RecordBatch)):
        block = from_arrow(data)
    elif type(data).__name__ == "DataFrame" and hasattr(data, "to_numpy"):
        # pandas (and Dask partitions): via Arrow, which converts columns without row loops
        block = from_arrow(pa.Table.from_pandas(data, preserve_index=False))
    elif isinstance(data, Mapping):
        block = from_numpy(data)
    else:
        return from_records(data, columns)
    if columns is not None and block.columns != columns:
        raise StoreError(_mismatch(block.columns, columns))
    return block


def _mismatch(got: tuple[Column, ...], expected: tuple[Column, ...]) -> str:
    return (
        f"a block has columns {[c.describe() + ' ' + c.name for c in got]}, "
        f"expected {[c.describe() + ' ' + c.name for c in expected]} (from the first block)"
    )


def from_records(
    records: Iterable[Mapping[str, Any]],
    columns: tuple[Column, ...] | None = None,
    *,
    first: int = 0,
) -> Block:
    """Encode records one by one with the row writer's checks and messages.

    ``first`` is the number of the first record in those messages.
    """
    builders: list[ColumnBuilder] = []
    names: tuple[str, ...] = ()
    name_set: set[str] = set()
    sizes: list[int] = []
    if columns is not None:
        builders = [ColumnBuilder(c) for c in columns]
        names = tuple(c.name for c in columns)
        name_set = set(names)
    for number, record in enumerate(records, first):
        if not builders:
            columns = infer_columns(record, number)
            builders = [ColumnBuilder(c) for c in columns]
            names = tuple(c.name for c in columns)
            name_set = set(names)
        check_record(record, number, names, name_set)
        size = 0
        for builder, name in zip(builders, names, strict=True):
            size += builder.append(record[name], number)
        sizes.append(size)
    return Block(
        columns or (),
        tuple(b.finish() for b in builders),
        np.asarray(sizes, dtype=np.int64),
    )


def _numpy_column(name: str, values: np.ndarray) -> tuple[Column, pa.Array, np.ndarray]:
    """One column of records along the first axis of ``values``."""
    if values.ndim == 0:
        raise StoreError(
            f"column {name!r} is a 0-d array; a block's columns have one row per record"
        )
    n = len(values)
    if values.dtype.kind in "OUS":
        items = values.tolist()  # bytes/str objects: Arrow copies them in one C loop
        column = infer_column(name, items[0]) if n else Column(name=name, kind="bytes")
        if column.kind not in ("bytes", "str"):
            return _numpy_column(name, np.stack(items)) if n else _empty(name)
        array = pa.array(items, type=arrow_type(column))
        return column, array, _var_sizes(column, array)
    column = infer_column(name, values[0] if n else values.reshape(-1)[:1].reshape(()))
    if column.dtype != values.dtype.str:  # big-endian input: stored little-endian
        values = values.astype(column.numpy_dtype)
    flat = np.ascontiguousarray(values).reshape(-1)
    type_ = arrow_type(column)
    if column.kind == "scalar" and column.numpy_dtype.kind == "b":
        array = pa.array(flat, type=type_)
    elif pa.types.is_fixed_size_binary(type_):
        array = pa.Array.from_buffers(type_, n, [None, pa.py_buffer(flat.view(np.uint8))])
    elif column.kind == "scalar":
        array = pa.array(flat)
    else:
        array = pa.FixedSizeListArray.from_arrays(pa.array(flat), type_.list_size)
    return column, array, np.full(n, column.itemsize, dtype=np.int64)


def _empty(name: str) -> tuple[Column, pa.Array, np.ndarray]:
    column = Column(name=name, kind="bytes")
    return column, pa.array([], type=pa.large_binary()), np.zeros(0, dtype=np.int64)


def _var_sizes(column: Column, array: pa.Array) -> np.ndarray:
    """Row-writer sizes of a bytes/str column: ``len(value) + 8`` (characters for str)."""
    lengths = pc.utf8_length(array) if column.kind == "str" else pc.binary_length(array)
    return lengths.to_numpy(zero_copy_only=False).astype(np.int64) + 8


def from_numpy(columns: Mapping[str, Any]) -> Block:
    """A block from a dict of arrays with records along the first axis (Ray's numpy batches)."""
    out = [_numpy_column(str(k), np.asarray(v)) for k, v in columns.items()]
    return _assemble(out)


def _assemble(parts: list[tuple[Column, pa.Array, np.ndarray]]) -> Block:
    if not parts:
        raise StoreError("a block has no columns; records must be non-empty dicts")
    lengths = {c.name: len(a) for c, a, _ in parts}
    if len(set(lengths.values())) != 1:
        raise StoreError(f"a block's columns differ in length: {lengths}")
    sizes = np.zeros(len(parts[0][1]), dtype=np.int64)
    for _, _, s in parts:
        sizes += s
    return Block(tuple(c for c, _, _ in parts), tuple(a for _, a, _ in parts), sizes)


def from_arrow(data: pa.Table | pa.RecordBatch) -> Block:
    """A block from Arrow columns, converted without per-record Python work.

    Numbers, bools, strings, binary and fixed-shape (possibly nested) lists of numbers map
    to the store's columns as the row writer would infer them from the same values; an
    extension type with ``to_numpy`` (Ray's tensor columns) goes through numpy.

    Raises:
        StoreError: for nulls, lists whose lengths vary, or types a store cannot hold.
    """
    parts = []
    for name, array in zip(data.schema.names, data.columns, strict=True):
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
        parts.append(_arrow_column(str(name), array))
    return _assemble(parts)


def _arrow_column(name: str, array: pa.Array) -> tuple[Column, pa.Array, np.ndarray]:
    type_ = array.type
    if isinstance(type_, pa.ExtensionType):
        if hasattr(array, "to_numpy"):
            return _numpy_column(name, np.asarray(array.to_numpy()))
        return _arrow_column(name, array.storage)
    if array.null_count:
        raise StoreError(
            f"column {name!r} has {array.null_count} null values; a store's columns hold no nulls"
        )
    n = len(array)
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        column = Column(name=name, kind="str")
        array = array.cast(pa.large_string())
        return column, array, _var_sizes(column, array)
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        column = Column(name=name, kind="bytes")
        array = array.cast(pa.large_binary())
        return column, array, _var_sizes(column, array)
    if pa.types.is_boolean(type_) or pa.types.is_integer(type_) or pa.types.is_floating(type_):
        dtype = np.dtype(type_.to_pandas_dtype())
        column = Column(name=name, kind="scalar", dtype=dtype.str)
        if pa.types.is_boolean(type_) or pa.types.is_float16(type_):
            return _numpy_column(name, array.to_numpy(zero_copy_only=False))
        return column, array, np.full(n, column.itemsize, dtype=np.int64)
    if (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
    ):
        if _varying_numbers(array):  # one level of numbers, lengths vary: a list column
            return _list_column(name, array)
        shape, values = _list_shape(name, array)
        flat = values.to_numpy(zero_copy_only=False)
        return _numpy_column(name, flat.reshape((n, *shape)))
    raise StoreError(
        f"column {name!r} has Arrow type {type_}; a store holds ints, floats, bools, strings, "
        f"binary and fixed-shape lists or tensors of numbers"
    )


def _varying_numbers(array: pa.Array) -> bool:
    """Whether ``array`` is a (large) list of ints/floats whose lengths are not all one."""
    type_ = array.type
    if not (pa.types.is_list(type_) or pa.types.is_large_list(type_)):
        return False
    item = type_.value_type
    if not (pa.types.is_integer(item) or pa.types.is_floating(item)) or pa.types.is_float16(item):
        return False
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    return bool(len(lengths)) and bool(np.any(lengths != lengths[0]))


def _list_column(name: str, array: pa.Array) -> tuple[Column, pa.Array, np.ndarray]:
    """A list column from Arrow lists of numbers, as the row writer's builder encodes it."""
    if array.values.null_count:
        raise StoreError(f"column {name!r} has nulls inside its lists; a store holds no nulls")
    dtype = np.dtype(array.type.value_type.to_pandas_dtype())
    column = Column(name=name, kind="list", dtype=dtype.str)
    array = array.cast(pa.large_list(pa.from_numpy_dtype(dtype)))
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    return column, array, lengths * dtype.itemsize + 8


def _list_shape(name: str, array: pa.Array) -> tuple[tuple[int, ...], pa.Array]:
    """The per-record shape and the flat values of (nested) lists of numbers, all one shape."""
    shape: list[int] = []
    n = len(array)
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or pa.types.is_fixed_size_list(array.type)
    ):
        if array.null_count:
            raise StoreError(f"column {name!r} has nulls inside its lists; a store holds no nulls")
        if pa.types.is_fixed_size_list(array.type):
            size = array.type.list_size
        else:
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
            size = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and np.any(lengths != size):
                raise StoreError(
                    f"column {name!r} holds lists of different lengths ({int(lengths.min())} to "
                    f"{int(lengths.max())}); a store's array columns have one shape"
                )
        shape.append(size)
        array = array.flatten()
    if array.null_count:
        raise StoreError(f"column {name!r} has nulls inside its lists; a store holds no nulls")
    if not (
        pa.types.is_integer(array.type)
        or pa.types.is_floating(array.type)
        or pa.types.is_boolean(array.type)
    ):
        raise StoreError(
            f"column {name!r} holds lists of {array.type}; a store's array columns hold numbers"
        )
    if n and len(array) != n * int(np.prod(shape)):
        raise StoreError(f"column {name!r}: its lists do not have one shape")
    return tuple(shape), array


class _Pending:
    """One column's slices of the shard being written; ``finish`` as ColumnBuilder's."""

    def __init__(self) -> None:
        self.parts: list[pa.Array] = []

    def finish(self) -> pa.Array:
        # a fresh, offset-free array: the same buffers the row writer's builder makes
        array = pa.concat_arrays(self.parts)
        self.parts = []
        return array


def write_block_shards(
    blocks: Iterable[Block],
    flush: Callable[[tuple[Column, ...], list[Any], int, int], Shard],
    *,
    shard_size: int,
    progress: bool,
) -> tuple[tuple[Column, ...], list[Shard]]:
    """Cut blocks into shards where the row writer would and hand each to ``flush``.

    ``flush(columns, pending, seq, n)`` encodes shard ``seq`` of ``n`` records from
    ``pending`` (objects whose ``finish()`` gives each column's array) and returns it.
    The row writer flushes after the record that brings the pending bytes to
    ``shard_size`` or more; here that record is found with a search over the running
    sum of the record sizes, so no record is visited in Python.
    """
    columns: tuple[Column, ...] = ()
    pending: list[_Pending] = []
    shards: list[Shard] = []
    pending_n = pending_bytes = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit=" rec", desc="writing", unit_scale=True)
    try:
        for block in blocks:
            if not pending:
                columns = block.columns
                pending = [_Pending() for _ in columns]
            elif block.columns != columns:
                raise StoreError(_mismatch(block.columns, columns))
            running = np.cumsum(block.sizes)
            start = 0
            while start < len(block):
                base = int(running[start - 1]) if start else 0
                stop = int(np.searchsorted(running, shard_size - pending_bytes + base, "left")) + 1
                piece = block.slice(start, min(stop, len(block)))
                for part, array in zip(pending, piece.arrays, strict=True):
                    part.parts.append(array)
                pending_n += len(piece)
                if stop <= len(block):
                    shards.append(flush(columns, pending, len(shards), pending_n))
                    pending_n = pending_bytes = 0
                else:
                    pending_bytes += int(running[-1]) - base
                start = stop
            if bar is not None:
                bar.update(len(block))
        if pending_n:
            shards.append(flush(columns, pending, len(shards), pending_n))
    finally:
        if bar is not None:
            bar.close()
    return columns, shards
