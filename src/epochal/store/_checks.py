"""Structural checks of one shard file against its manifest entry (see ``_reader``).

Kept apart from the reader so that what "a shard is sound" means reads in one place, and
so that ``verify`` can run exactly the same checks on a local memory map or on the bytes
of a remote shard.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from epochal.store._columns import arrow_schema
from epochal.store._errors import CorruptStoreError
from epochal.store._format import (
    FORMAT_VERSION,
    SHARD_COLUMNS_KEY,
    SHARD_POSITION_KEY,
    Column,
    Shard,
    shard_position,
)

__all__ = ["check_shard"]

_MAGIC = b"ARROW1"


def check_shard(
    source: pa.NativeFile,
    shard: Shard,
    columns: tuple[Column, ...],
    where: str,
    *,
    version: int = FORMAT_VERSION,
    full: bool = False,
) -> pa.RecordBatch:
    """The one record batch of a shard file, after every structural check.

    ``source`` holds exactly the file's bytes (a memory map, or a buffer of a downloaded
    file) and must read zero-copy: the checks compare where each Arrow buffer lies with
    where this writer puts it. ``full`` also checks every value (UTF-8 of str columns,
    every offset), which costs a pass over the data: ``verify`` does that.

    Raises:
        CorruptStoreError: naming the shard and what is wrong with it.
    """
    try:
        if source.read_at(6, 0) != _MAGIC:  # Arrow checks only the trailing magic
            raise CorruptStoreError(
                f"shard {where} is damaged: it does not start as an Arrow IPC file"
            )
        reader = pa.ipc.open_file(source)
        if not reader.schema.equals(arrow_schema(columns)):
            fields = ", ".join(f"{f.name}: {f.type}" for f in reader.schema)
            raise CorruptStoreError(f"shard {where} has schema ({fields}), not the manifest's")
        if version >= 2:
            _check_identity(reader.schema.metadata or {}, shard, columns, where)
        if reader.num_record_batches != 1:
            raise CorruptStoreError(
                f"shard {where} has {reader.num_record_batches} record batches, expected 1"
            )
        batch = reader.get_batch(0)
        if batch.num_rows != shard.records:
            raise CorruptStoreError(
                f"shard {where} has {batch.num_rows} records, the manifest says {shard.records}"
            )
        batch.validate(full=full)
        _check_buffers(source, batch, columns, where)
    except (pa.ArrowException, OSError, ValueError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CorruptStoreError(f"shard {where} is damaged: {first_line}") from err
    return batch


def _check_identity(
    metadata: Mapping[bytes, bytes], shard: Shard, columns: tuple[Column, ...], where: str
) -> None:
    """A version-2 shard records its position and columns: a manifest edit that renames,
    moves or reshapes a shard (same Arrow type, other meaning: shape (4, 4) -> (2, 8))
    shows here."""
    own = metadata.get(SHARD_POSITION_KEY, b"").decode("utf-8", "replace")
    if own != shard_position(shard.name):
        raise CorruptStoreError(
            f"shard {where} is a different shard (written as {own or 'unknown'!r}): the manifest's "
            f"shard list was edited or the files were moved"
        )
    try:
        recorded = [Column.from_json(c) for c in json.loads(metadata.get(SHARD_COLUMNS_KEY, b""))]
    except (ValueError, TypeError, RecursionError):
        recorded = None
    if recorded != list(columns):
        described = "unreadable" if recorded is None else [c.describe() for c in recorded]
        raise CorruptStoreError(
            f"shard {where} was written with columns {described}, the manifest says "
            f"{[c.describe() for c in columns]}"
        )


def _expected_sizes(column: Column, array: pa.Array) -> list[int | None]:
    """Byte sizes of an array's buffers (``array.buffers()`` order) as this writer writes
    them; None for validity buffers (no nulls: Arrow does not keep them)."""
    n = len(array)
    if column.kind in ("bytes", "str", "list"):
        offsets = array.buffers()[1]
        end = 0
        if offsets is not None and offsets.size >= (n + 1) * 8:
            end = int(np.frombuffer(offsets, dtype=np.int64, count=n + 1)[-1])
        if column.kind == "list":  # offsets count elements; the values have no validity
            return [None, (n + 1) * 8, None, end * column.itemsize]
        return [None, (n + 1) * 8, end]
    if column.kind == "scalar" and column.numpy_dtype.kind == "b":
        return [None, (n + 7) // 8]
    if pa.types.is_fixed_size_list(array.type):
        return [None, None, n * column.itemsize]
    return [None, n * column.itemsize]


def _check_buffers(
    source: pa.NativeFile, batch: pa.RecordBatch, columns: tuple[Column, ...], where: str
) -> None:
    """Every buffer lies where the Arrow file's own framing says the body is, back to back
    in schema order (each padded to 8 bytes), with exactly the size the schema and record
    count imply. One flipped bit in a buffer's offset or length, in the message lengths
    or the footer's block, breaks one of these; unchecked, it would read another part of
    the file as the column (a real case: an offset moved by 128 bytes)."""
    size = source.size()
    source.seek(0)
    base = source.read_buffer(8).address  # zero-copy: where the file's bytes are
    # the file: magic (8), schema message, record batch message, body, EOS (8), footer,
    # footer length (4), magic (6); each message is a -1 marker and a length, then that many
    (footer_len,) = np.frombuffer(source.read_at(4, size - 10), dtype="<i4").tolist()
    schema_len = int(np.frombuffer(source.read_at(8, 8), dtype="<i4")[1])
    batch_at = 16 + schema_len
    if not 0 <= batch_at <= size - 8:
        raise CorruptStoreError(f"shard {where} is damaged: bad schema message length")
    marker, batch_len = np.frombuffer(source.read_at(8, batch_at), dtype="<i4").tolist()
    position = batch_at + 8 + batch_len
    if marker != -1 or not batch_at < position <= size:
        raise CorruptStoreError(f"shard {where} is damaged: bad record batch message framing")
    for column, array in zip(columns, batch.columns, strict=True):
        buffers = array.buffers()
        sizes = _expected_sizes(column, array)
        if len(buffers) != len(sizes):
            raise CorruptStoreError(
                f"shard {where}: column {column.name!r} has {len(buffers)} buffers, expected {len(sizes)}"
            )
        for buffer, expected in zip(buffers, sizes, strict=True):
            if expected is None:
                if buffer is not None:
                    raise CorruptStoreError(
                        f"shard {where}: column {column.name!r} has a validity buffer (nulls?)"
                    )
                continue
            got = 0 if buffer is None else buffer.size
            if got != expected:
                raise CorruptStoreError(
                    f"shard {where}: column {column.name!r} has a buffer of {got} bytes, its "
                    f"records need {expected}"
                )
            if expected == 0:
                continue
            assert buffer is not None
            if buffer.address - base != position:
                raise CorruptStoreError(
                    f"shard {where}: column {column.name!r} has a buffer at byte "
                    f"{buffer.address - base} of the file, expected {position}"
                )
            position += -(-expected // 8) * 8
    if position + 8 != size - 10 - footer_len:
        raise CorruptStoreError(
            f"shard {where} is damaged: its buffers end at byte {position}, the body at "
            f"{size - 18 - footer_len}"
        )
