"""Per-granule checksums of a shard, so object storage can be read in verified record ranges.

A shard holds one Arrow record batch: each column's bytes are one contiguous buffer. A
*granule* is ``g`` consecutive records of a shard; its bytes are one byte range per column
(fixed-size columns: ``g * itemsize`` bytes; bytes/str columns: the slice of the data
buffer between two offsets). The writer records, next to each shard, a small sidecar
``blocks/<shard name>.json`` (its xxh3-64 and ``g`` go into the manifest's shard entry)::

    {"format": "epochal-blocks", "version": 1, "records": n, "bytes": shard bytes,
     "granule_records": g,
     "columns": [{"rows": [pos, size]} | {"offsets": [pos, size], "data": [pos, size]}
                 | {"bits": [pos, size]}, ...],          # buffer positions in the shard file
     "head_xxh3": "...",     # the offsets and bit buffers, concatenated in column order
     "granules": ["...", ...]}   # xxh3-64 of each granule's column ranges, concatenated

A reader fetches the sidecar and the *head* (offsets of variable-size columns and bool
bitmaps, which are small) once per shard, then any granule with one range request per
column, and checks every piece against its digest before use. Stores without sidecars
(written before them) are read in whole shards, checked against the shard's xxh3.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from epochal.store._errors import CorruptStoreError
from epochal.store._format import Column, Shard

__all__ = [
    "BLOCKS_DIR",
    "GRANULE_BYTES",
    "ShardHead",
    "check_granules",
    "check_path_fields",
    "head_ranges",
    "index_name",
    "parse_head",
    "parse_index",
    "write_block_index",
]

BLOCKS_DIR = "blocks"
GRANULE_BYTES = 256 << 10  # target bytes per granule: the finest unit a range read verifies
_MIN_GRANULES = 16  # small shards still get this many granules (test stores, tiny shards)
_FORMAT = "epochal-blocks"
_VERSION = 1
_HEX16 = re.compile(r"[0-9a-f]{16}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def index_name(shard_name: str) -> str:
    """The sidecar's name under :data:`BLOCKS_DIR`."""
    return f"{shard_name}.json"


def check_path_fields(shard: Shard, *, where: str) -> None:
    """Refuse manifest fields that would reach a file path unless they are plain.

    Shard names become remote paths and digests become cache file names, so a hostile
    manifest could otherwise make the cache read or write outside its folder.
    """
    if not _PLAIN_NAME.fullmatch(shard.name) or ".." in shard.name:
        raise CorruptStoreError(
            f"manifest {where} names a shard {shard.name!r}: a shard name must be a plain file name "
            f"(letters, digits, '.', '_', '-', not starting with '.', no '..')"
        )
    for field, value in (("xxh3", shard.xxh3), ("granules_xxh3", shard.granules_xxh3)):
        if value is not None and not _HEX16.fullmatch(value):
            raise CorruptStoreError(
                f"manifest {where}: shard {shard.name} has {field} {value!r}, expected 16 lowercase hex digits"
            )
    g = shard.granule_records
    if (g is None) != (shard.granules_xxh3 is None) or (
        g is not None and not 1 <= g <= max(shard.records, 1)
    ):
        raise CorruptStoreError(
            f"manifest {where}: shard {shard.name} has granule_records {g!r}, expected "
            f"1..{max(shard.records, 1)} together with granules_xxh3"
        )


# -- writer side ----------------------------------------------------------------------------


def _spans(batch: pa.RecordBatch, columns: tuple[Column, ...], base: int) -> list[dict[str, Any]]:
    """Each column's buffer positions in the file whose memory starts at ``base``."""
    n = batch.num_rows
    out: list[dict[str, Any]] = []
    for i, column in enumerate(columns):
        buffers = batch.column(i).buffers()
        if column.kind in ("bytes", "str", "list"):
            offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1)
            data = buffers[-1]  # a list's offsets count elements of its values' buffer
            data_pos = data.address - base if data is not None and data.size else 0
            scale = column.itemsize if column.kind == "list" else 1
            out.append(
                {
                    "offsets": [buffers[1].address - base, (n + 1) * 8],
                    "data": [data_pos, int(offsets[-1]) * scale],
                }
            )
        elif column.kind == "scalar" and column.numpy_dtype.kind == "b":
            out.append({"bits": [buffers[1].address - base, (n + 7) // 8]})
        else:
            out.append({"rows": [buffers[-1].address - base, n * column.itemsize]})
    return out


def write_block_index(
    loc: Any, shard_name: str, data: pa.Buffer, columns: tuple[Column, ...], records: int
) -> tuple[int, str]:
    """Write the granule sidecar of a shard just written; returns (granule_records, its xxh3).

    The writer's hook: ``data`` is the whole shard file as written.
    """
    batch = pa.ipc.open_file(data).get_batch(0)  # zero copy: buffers point into ``data``
    spans = _spans(batch, columns, data.address)
    mean = max(data.size / max(records, 1), 1.0)
    target = min(GRANULE_BYTES, max(data.size // _MIN_GRANULES, 1))
    # a power of two: shards of fixed-size records often hold a multiple of it, so the
    # loader's blocks (multiples of the largest granule) start and end on granules
    g = 1 << max(0, int(min(max(records, 1), max(1, target // mean))).bit_length() - 1)
    memory = memoryview(data)
    head = b"".join(memory[a:b] for a, b in head_ranges({"columns": spans}))
    geometry = ShardHead.from_spans(spans, columns, records=records, granule_records=g, head=head)
    granules = []
    for u in range(geometry.units):
        digest = xxhash.xxh3_64()
        for start, stop in geometry.unit_ranges(u):
            digest.update(memory[start:stop])
        granules.append(digest.hexdigest())
    body = {
        "format": _FORMAT,
        "version": _VERSION,
        "records": records,
        "bytes": data.size,
        "granule_records": g,
        "columns": spans,
        "head_xxh3": xxhash.xxh3_64_hexdigest(head),
        "granules": granules,
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    loc.put(raw, BLOCKS_DIR, index_name(shard_name))
    return g, xxhash.xxh3_64_hexdigest(raw)


# -- reader side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Col:
    kind: str  # "rows" (fixed size), "var" (bytes/str/list) or "bits" (bool scalar)
    pos: int  # file position of the rows / data buffer
    itemsize: int  # rows only
    offsets: np.ndarray | None = None  # var: (n + 1,) int64, in bytes
    bits: np.ndarray | None = None  # bits: (n,) bool


class ShardHead:
    """What a reader needs of one shard besides its granules: buffer positions, offsets, bits.

    Also the geometry of its units: in block mode a unit is one granule and its cache file
    is the granule's column ranges back to back; in whole-shard mode (``granules`` None)
    the only unit is the shard file itself.
    """

    def __init__(
        self,
        cols: list[_Col],
        *,
        records: int,
        granule_records: int,
        granules: tuple[str, ...] | None,
    ) -> None:
        self.cols = cols
        self.records = records
        self.g = max(granule_records, 1)
        self.units = max(1, -(-records // self.g))
        self.granules = granules
        # column index -> the column's whole buffer, for small columns fetched with the head
        self.rows: dict[int, bytes] = {}

    @classmethod
    def from_spans(
        cls,
        spans: list[dict[str, Any]],
        columns: tuple[Column, ...],
        *,
        records: int,
        granule_records: int,
        head: bytes,
        granules: tuple[str, ...] | None = None,
    ) -> ShardHead:
        """From sidecar spans and the head: the offsets/bit buffers concatenated in column order."""
        cols: list[_Col] = []
        cursor = 0
        for span, column in zip(spans, columns, strict=True):
            if "offsets" in span:
                size = span["offsets"][1]
                offsets = np.frombuffer(head[cursor : cursor + size], dtype=np.int64).copy()
                if column.kind == "list":  # in bytes, as for bytes/str columns
                    offsets *= column.itemsize
                cursor += size
                cols.append(_Col("var", span["data"][0], 0, offsets=offsets))
            elif "bits" in span:
                size = span["bits"][1]
                packed = np.frombuffer(head[cursor : cursor + size], dtype=np.uint8)
                bits = np.unpackbits(packed, bitorder="little")[:records].astype(bool)
                cursor += size
                cols.append(_Col("bits", span["bits"][0], 0, bits=bits))
            else:
                cols.append(_Col("rows", span["rows"][0], column.itemsize))
        return cls(cols, records=records, granule_records=granule_records, granules=granules)

    def unit_span(self, u: int) -> tuple[int, int]:
        """Records [a, b) of unit ``u`` (shard-local)."""
        return u * self.g, min((u + 1) * self.g, self.records)

    def unit_ranges(self, u: int, stop_unit: int | None = None) -> list[tuple[int, int]]:
        """Byte ranges of the shard file holding units [u, stop_unit), one per non-bit column."""
        a = self.unit_span(u)[0]
        b = self.unit_span((stop_unit or u + 1) - 1)[1]
        out = []
        for col in self.cols:
            if col.kind == "rows":
                out.append((col.pos + a * col.itemsize, col.pos + b * col.itemsize))
            elif col.kind == "var":
                assert col.offsets is not None
                out.append((col.pos + int(col.offsets[a]), col.pos + int(col.offsets[b])))
        return out

    def unit_bytes(self, u: int) -> int:
        if self.granules is None:
            return -1  # whole-shard mode: the manifest's shard size
        return sum(stop - start for start, stop in self.unit_ranges(u))

    def bases(self, u: int) -> list[int]:
        """Per column, the position in unit ``u``'s cache file of (shard-local) record 0's
        bytes: rows at ``base + l * itemsize``, var data at ``base + offsets[l]``."""
        if self.granules is None:
            return [col.pos for col in self.cols]
        a = self.unit_span(u)[0]
        out, cursor = [], 0
        for col, (start, stop) in zip(
            (c for c in self.cols if c.kind != "bits"), self.unit_ranges(u), strict=True
        ):
            if col.kind == "rows":
                out.append(cursor - a * col.itemsize)
            else:
                assert col.offsets is not None
                out.append(cursor - int(col.offsets[a]))
            cursor += stop - start
        it = iter(out)
        return [next(it) if col.kind != "bits" else 0 for col in self.cols]


def _range(value: Any, limit: int, what: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{what} is {value!r}, expected [position, size]")
    pos, size = value
    if pos < 0 or size < 0 or pos + size > limit:
        raise ValueError(f"{what} [{pos}, {size}] lies outside the shard's {limit} bytes")
    return pos, size


def parse_index(
    raw: bytes, shard: Shard, columns: tuple[Column, ...], *, where: str
) -> dict[str, Any]:
    """Check a sidecar against its digest and the shard; returns its body."""
    if xxhash.xxh3_64_hexdigest(raw) != shard.granules_xxh3:
        raise CorruptStoreError(
            f"shard {where}: its granule index is corrupt (xxh3 {xxhash.xxh3_64_hexdigest(raw)}, the "
            f"manifest says {shard.granules_xxh3})"
        )
    try:
        body = json.loads(raw)
        if body.get("format") != _FORMAT or body.get("version") != _VERSION:
            raise ValueError(f"format {body.get('format')!r} version {body.get('version')!r}")
        n, g = body["records"], body["granule_records"]
        if n != shard.records or body["bytes"] != shard.bytes or g != shard.granule_records:
            raise ValueError("records, bytes or granule_records differ from the manifest")
        spans = body["columns"]
        if not isinstance(spans, list) or len(spans) != len(columns):
            raise ValueError(f"{len(spans)} column entries for {len(columns)} columns")
        for span, column in zip(spans, columns, strict=True):
            var = column.kind in ("bytes", "str", "list")
            bits = column.kind == "scalar" and column.numpy_dtype.kind == "b"
            keys = {"offsets", "data"} if var else {"bits"} if bits else {"rows"}
            if not isinstance(span, dict) or set(span) != keys:
                raise ValueError(
                    f"column {column.name!r} entry {span!r}, expected keys {sorted(keys)}"
                )
            for key in keys:
                _range(span[key], shard.bytes, f"column {column.name!r} {key}")
            if var and span["offsets"][1] != (n + 1) * 8:
                raise ValueError(f"column {column.name!r} offsets size {span['offsets'][1]}")
            if bits and span["bits"][1] != (n + 7) // 8:
                raise ValueError(f"column {column.name!r} bits size {span['bits'][1]}")
            if not var and not bits and span["rows"][1] != n * column.itemsize:
                raise ValueError(f"column {column.name!r} rows size {span['rows'][1]}")
        granules = body["granules"]
        if (
            not isinstance(granules, list)
            or len(granules) != max(1, -(-n // g))
            or not all(isinstance(d, str) and _HEX16.fullmatch(d) for d in granules)
            or not (isinstance(body["head_xxh3"], str) and _HEX16.fullmatch(body["head_xxh3"]))
        ):
            raise ValueError("bad granule or head digests")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CorruptStoreError(f"shard {where}: its granule index is damaged: {err}") from err
    return body


def head_ranges(body: dict[str, Any]) -> list[tuple[int, int]]:
    """Byte ranges of the shard file that make up its head (offsets and bit buffers)."""
    out = []
    for span in body["columns"]:
        for key in ("offsets", "bits"):
            if key in span:
                pos, size = span[key]
                out.append((pos, pos + size))
    return out


def parse_head(
    body: dict[str, Any], head: bytes, columns: tuple[Column, ...], *, where: str
) -> ShardHead:
    """The shard's head from its verified bytes; offsets are checked like a local shard's."""
    if xxhash.xxh3_64_hexdigest(head) != body["head_xxh3"]:
        raise CorruptStoreError(
            f"shard {where} is corrupt: its offsets/bit buffers have xxh3 {xxhash.xxh3_64_hexdigest(head)}, "
            f"its granule index says {body['head_xxh3']}"
        )
    result = ShardHead.from_spans(
        body["columns"],
        columns,
        records=body["records"],
        granule_records=body["granule_records"],
        head=head,
        granules=tuple(body["granules"]),
    )
    for col, span, column in zip(result.cols, body["columns"], columns, strict=True):
        if col.kind == "var":
            off = col.offsets
            assert off is not None
            if off[0] != 0 or off[-1] != span["data"][1] or np.any(off[1:] < off[:-1]):
                raise CorruptStoreError(
                    f"shard {where}: column {column.name!r} has damaged offsets"
                )
    return result


def check_granules(
    raw: bytes, data: Any, shard: Shard, columns: tuple[Column, ...], *, where: str
) -> None:
    """Check a shard's sidecar ``raw`` against the shard file's bytes ``data`` (``verify``).

    The sidecar must match the manifest (its digest, records, buffer positions), its head
    digest the shard's offsets and bit buffers, and every granule digest the granule's
    bytes: a wrong entry would make every range read of that granule fail.

    Raises:
        CorruptStoreError: naming the shard and, for a wrong granule digest, the granule.
    """
    body = parse_index(raw, shard, columns, where=where)
    with memoryview(data) as memory:  # released before a caller's map closes
        head_bytes = b"".join(bytes(memory[a:b]) for a, b in head_ranges(body))
        head = parse_head(body, head_bytes, columns, where=where)
        assert head.granules is not None
        for u in range(head.units):
            digest = xxhash.xxh3_64()
            for start, stop in head.unit_ranges(u):
                digest.update(memory[start:stop])
            if digest.hexdigest() != head.granules[u]:
                a, b = head.unit_span(u)
                raise CorruptStoreError(
                    f"shard {where}: granule {u} (records {a}..{b - 1}) has xxh3 "
                    f"{digest.hexdigest()}, its granule index "
                    f"{BLOCKS_DIR}/{index_name(shard.name)} says {head.granules[u]}"
                )
