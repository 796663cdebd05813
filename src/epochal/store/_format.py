"""The on-disk format of a store: manifest schema, format version and column types.

A store is a directory (local or any fsspec URL) holding::

    manifest.json              written last and atomically; its presence means "finished"
    shards/<name>.arrow        Arrow IPC files, one record batch each, uncompressed

The manifest names every shard with its record count, byte size and xxh3-64 checksum, the
schema (one :class:`Column` per field), the format version and a dataset fingerprint.
Version policy: readers accept every version up to :data:`FORMAT_VERSION` and refuse newer
ones with a message saying to upgrade epochal.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from epochal.store._errors import CorruptStoreError, StoreError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "MANIFEST_NAME",
    "PARTITIONS_DIR",
    "SHARDS_DIR",
    "Column",
    "Manifest",
    "Shard",
    "fingerprint_of",
    "infer_column",
]

FORMAT = "epochal-store"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
PARTITIONS_DIR = "_partitions"  # per-partition manifests of a build that is not merged yet

# column kinds: how a value is stored and how a batch reads back
#   scalar: one numpy scalar per record (python int -> int64, float -> float64, bool)
#   array:  fixed-shape numpy array per record (dtype + shape in the manifest)
#   bytes:  variable-size bytes (large_binary); str: variable-size text (large_string)
KINDS = ("array", "bytes", "scalar", "str")


@dataclass(frozen=True, kw_only=True)
class Column:
    """One field of the schema: its name, kind and, for scalar/array, dtype and shape."""

    name: str
    kind: str
    dtype: str | None = None  # numpy dtype string (little-endian), scalar and array only
    shape: tuple[int, ...] = ()  # per-record shape, array only

    @functools.cached_property  # looked up for every batch: computed once per column
    def numpy_dtype(self) -> np.dtype:
        assert self.dtype is not None, self
        return np.dtype(self.dtype)

    @functools.cached_property
    def itemsize(self) -> int:
        """Bytes per record of a scalar/array column."""
        return self.numpy_dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))

    def describe(self) -> str:
        if self.kind == "array":
            return f"array[{self.dtype}, {list(self.shape)}]"
        if self.kind == "scalar":
            return f"scalar[{self.dtype}]"
        return self.kind

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.kind == "array":
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_json(cls, data: Any) -> Column:
        if (
            not isinstance(data, dict)
            or data.get("kind") not in KINDS
            or not isinstance(data.get("name"), str)
        ):
            raise ValueError(f"bad column entry {data!r}")
        kind = data["kind"]
        dtype = data.get("dtype")
        if kind in ("scalar", "array"):
            np.dtype(dtype)  # raises TypeError on garbage
        shape = tuple(int(d) for d in data.get("shape", ()))
        return cls(name=data["name"], kind=kind, dtype=dtype, shape=shape)


@dataclass(frozen=True, kw_only=True)
class Shard:
    """One shard file: its name under ``shards/``, record count, byte size and xxh3-64."""

    name: str
    records: int
    bytes: int
    xxh3: str
    # optional (added with issue #11): records per granule and the xxh3 of the shard's
    # granule sidecar (see store/_blocks.py); without them remote reads fetch whole shards
    granule_records: int | None = None
    granules_xxh3: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "records": self.records,
            "bytes": self.bytes,
            "xxh3": self.xxh3,
        }
        if self.granules_xxh3 is not None:
            out["granule_records"] = self.granule_records
            out["granules_xxh3"] = self.granules_xxh3
        return out

    @classmethod
    def from_json(cls, data: Any) -> Shard:
        if not isinstance(data, dict):
            raise ValueError(f"bad shard entry {data!r}")
        shard = cls(
            name=str(data["name"]),
            records=int(data["records"]),
            bytes=int(data["bytes"]),
            xxh3=str(data["xxh3"]),
            granule_records=None
            if data.get("granule_records") is None
            else int(data["granule_records"]),
            granules_xxh3=None if data.get("granules_xxh3") is None else str(data["granules_xxh3"]),
        )
        if "/" in shard.name or shard.name.startswith(".") or shard.records < 0 or shard.bytes < 0:
            raise ValueError(f"bad shard entry {data!r}")
        return shard


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a finished store holds; :meth:`to_bytes` is the exact content of ``manifest.json``."""

    columns: tuple[Column, ...]
    shards: tuple[Shard, ...]
    metadata: dict[str, Any] = field(default_factory=dict)  # user data, e.g. class names
    version: int = FORMAT_VERSION

    @property
    def num_records(self) -> int:
        return sum(s.records for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.columns, self.shards)

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "version": self.version,
            "num_records": self.num_records,
            "fingerprint": self.fingerprint,
            "columns": [c.to_json() for c in self.columns],
            "shards": [s.to_json() for s in self.shards],
            "metadata": self.metadata,
        }
        return json.dumps(body, indent=1, sort_keys=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, *, where: str) -> Manifest:
        """Parse and check a manifest; ``where`` names it in errors."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CorruptStoreError(
                f"manifest {where} is not valid JSON ({err}); the store is damaged"
            ) from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CorruptStoreError(
                f"{where} is not an epochal store manifest (format {data.get('format') if isinstance(data, dict) else None!r}, expected {FORMAT!r})"
            )
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise CorruptStoreError(f"manifest {where} has a bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise StoreError(
                f"store manifest {where} has format version {version}, newer than this epochal reads (<= {FORMAT_VERSION}); upgrade epochal"
            )
        try:
            manifest = cls(
                columns=tuple(Column.from_json(c) for c in data["columns"]),
                shards=tuple(Shard.from_json(s) for s in data["shards"]),
                metadata=dict(data.get("metadata") or {}),
                version=version,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptStoreError(f"manifest {where} is damaged: {err}") from err
        if not manifest.columns or len({c.name for c in manifest.columns}) != len(manifest.columns):
            raise CorruptStoreError(
                f"manifest {where} is damaged: missing or repeated column names"
            )
        if len({s.name for s in manifest.shards}) != len(manifest.shards):
            raise CorruptStoreError(f"manifest {where} is damaged: a shard is listed twice")
        if (
            data.get("num_records") != manifest.num_records
            or data.get("fingerprint") != manifest.fingerprint
        ):
            raise CorruptStoreError(
                f"manifest {where} is damaged: its record count or fingerprint does not match its shard list"
            )
        return manifest


def fingerprint_of(columns: tuple[Column, ...], shards: tuple[Shard, ...]) -> str:
    """A 16-hex-digit hash of the schema and every shard's records and checksum."""
    digest = xxhash.xxh3_64()
    digest.update(json.dumps([c.to_json() for c in columns]).encode())
    for shard in shards:
        digest.update(f"{shard.records}:{shard.xxh3};".encode())
    return digest.hexdigest()


def infer_column(name: str, value: Any) -> Column:
    """The column a first value implies; raises StoreError for types a store cannot hold."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Column(name=name, kind="bytes")
    if isinstance(value, str):
        return Column(name=name, kind="str")
    if isinstance(value, (bool, np.bool_)):
        return Column(name=name, kind="scalar", dtype="|b1")
    if isinstance(value, int):
        return Column(name=name, kind="scalar", dtype="<i8")
    if isinstance(value, float):
        return Column(name=name, kind="scalar", dtype="<f8")
    if isinstance(value, (np.generic, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind not in "biufc":
            raise StoreError(
                f"column {name!r} has numpy dtype {array.dtype}; a store holds bool/int/uint/float/complex arrays, bytes and str"
            )
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if array.size == 0:
            raise StoreError(
                f"column {name!r} holds an empty array (shape {array.shape}); records need at least one element"
            )
        if array.ndim == 0:
            return Column(name=name, kind="scalar", dtype=dtype.str)
        return Column(name=name, kind="array", dtype=dtype.str, shape=tuple(array.shape))
    raise StoreError(
        f"column {name!r} has a value of type {type(value).__name__}; a store holds bytes, str, int, float, bool and numpy arrays"
    )
