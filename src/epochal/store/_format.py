"""The on-disk format of a store: manifest schema, format version and column types.

A store is a directory (local or any fsspec URL) holding::

    manifest.json              written last and atomically; its presence means "finished"
    shards/<name>.arrow        Arrow IPC files, one record batch each, uncompressed

The manifest names every shard with its record count, byte size and xxh3-64 checksum, the
schema (one :class:`Column` per field), the format version and a dataset fingerprint.
Version policy: readers accept every version up to :data:`FORMAT_VERSION` and refuse newer
ones with a message saying to upgrade epochal.

The manifest is untrusted input: every field is checked for type and range when it is
parsed (:meth:`Manifest.from_bytes`), so a hand edit or a flipped byte is an error naming
the field, never an overflow, a path outside the store or a silent change of meaning.
Version 2 (this writer) adds what lets a reader check a manifest against the shards
themselves: shard names ``part-<partition>-<build id>-<seq>.arrow`` whose order the
manifest must keep, and each shard's own position and column entries in its Arrow schema
metadata (:data:`SHARD_POSITION_KEY`, :data:`SHARD_COLUMNS_KEY`; the position, not the
name, so that rebuilding the same records gives the same bytes, checksums and
fingerprint whatever the build id). Version 1 stores (names
``part-<partition>-<seq>.arrow``, no shard metadata) still read. Version 3 adds the
``list`` column kind (variable-length 1-D numeric arrays); a store is written as version 3
only when it has such a column, so stores without one stay readable by version-2 readers.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
import xxhash

from epochal._errors import InvalidValueError
from epochal.store._errors import CorruptStoreError, StoreError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "LIST_VERSION",
    "MANIFEST_NAME",
    "PARTITIONS_DIR",
    "SHARDS_DIR",
    "SHARD_COLUMNS_KEY",
    "SHARD_POSITION_KEY",
    "Column",
    "Manifest",
    "Shard",
    "check_shard_entry",
    "fingerprint_of",
    "infer_column",
    "shard_build",
    "shard_position",
    "version_for",
]

FORMAT = "epochal-store"
FORMAT_VERSION = 3  # the newest version this code reads
LIST_VERSION = 3  # the first version with "list" columns
SHARD_POSITION_KEY = b"epochal.position"  # a shard's schema metadata: "<partition>-<seq>"
SHARD_COLUMNS_KEY = b"epochal.columns"  # ... and the manifest's column entries, as JSON

# bounds on what a manifest may claim (far above any real store, far below an overflow)
MAX_SHARD_RECORDS = 1 << 40
MAX_RECORDS = 1 << 48
MAX_SHARD_BYTES = 1 << 48
MAX_RECORD_BYTES = 1 << 32  # of one fixed-size value
MAX_NDIM = 32

_SHARD_NAME = re.compile(r"^(part-(\d{5})-[A-Za-z0-9_]{1,64})-(\d{6})\.arrow$")
_V1_SHARD_NAME = re.compile(r"^part-(\d{5})-(\d{6})\.arrow$")
_XXH3 = re.compile(r"^[0-9a-f]{16}$")
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
PARTITIONS_DIR = "_partitions"  # per-partition manifests of a build that is not merged yet

# column kinds: how a value is stored and how a batch reads back
#   scalar: one numpy scalar per record (python int -> int64, float -> float64, bool)
#   array:  fixed-shape numpy array per record (dtype + shape in the manifest)
#   bytes:  variable-size bytes (large_binary); str: variable-size text (large_string)
#   list:   variable-length 1-D int/uint/float array per record (large_list; version 3)
KINDS = ("array", "bytes", "list", "scalar", "str")


@dataclass(frozen=True, kw_only=True)
class Column:
    """One field of the schema: its name, kind and, for scalar/array, dtype and shape."""

    name: str
    kind: str
    dtype: str | None = None  # numpy dtype string (little-endian), scalar, array and list
    shape: tuple[int, ...] = ()  # per-record shape, array only

    @functools.cached_property  # looked up for every batch: computed once per column
    def numpy_dtype(self) -> np.dtype:
        assert self.dtype is not None, self
        return np.dtype(self.dtype)

    @functools.cached_property
    def itemsize(self) -> int:
        """Bytes per record of a scalar/array column (per element of a list column)."""
        return self.numpy_dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))

    @property
    def variable(self) -> bool:
        """Whether records differ in size (bytes, str, list): read through offsets."""
        return self.kind in ("bytes", "str", "list")

    def describe(self) -> str:
        if self.kind == "array":
            return f"array[{self.dtype}, {list(self.shape)}]"
        if self.kind == "scalar":
            return f"scalar[{self.dtype}]"
        if self.kind == "list":
            return f"list[{self.dtype}]"
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
        """Parse a column entry; ValueError naming the field when it is not a valid one."""
        if not isinstance(data, dict):
            raise InvalidValueError(f"a column entry must be an object, got {data!r}")
        name, kind = data.get("name"), data.get("kind")
        if not isinstance(name, str) or not name or "\x00" in name:
            raise InvalidValueError(
                f"column name must be a non-empty string without NUL, got {name!r}"
            )
        if kind not in KINDS:
            raise InvalidValueError(
                f"column {name!r} has kind {kind!r}, expected one of {list(KINDS)}"
            )
        dtype, shape = data.get("dtype"), data.get("shape", [])
        if kind in ("bytes", "str"):
            if dtype is not None or "shape" in data:
                raise InvalidValueError(
                    f"column {name!r} of kind {kind!r} cannot have a dtype or shape"
                )
            return cls(name=name, kind=kind)
        _check_dtype(name, dtype)
        if (kind == "scalar" and shape != []) or (kind == "list" and "shape" in data):
            raise InvalidValueError(f"{kind} column {name!r} cannot have a shape, got {shape!r}")
        if kind == "list" and np.dtype(dtype).kind not in "iuf":
            raise InvalidValueError(
                f"list column {name!r} has dtype {dtype!r}; list columns hold int, uint or "
                f"float elements"
            )
        if kind == "array":
            _check_shape(name, shape, np.dtype(dtype).itemsize)
        return cls(name=name, kind=kind, dtype=dtype, shape=tuple(shape))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_dtype(name: str, dtype: Any) -> None:
    try:
        with warnings.catch_warnings():  # deprecated aliases ('a') are refused below anyway
            warnings.simplefilter("ignore")
            parsed = np.dtype(dtype) if isinstance(dtype, str) else None
    except Exception:  # numpy's parser raises TypeError, ValueError, even SyntaxError
        parsed = None
    if (
        parsed is None
        or parsed.str != dtype
        or parsed.kind not in "biufc"
        or parsed.byteorder == ">"
    ):
        raise InvalidValueError(
            f"column {name!r} has dtype {dtype!r}; expected a little-endian numpy dtype string of "
            f"bool/int/uint/float/complex such as '<f4' or '|u1'"
        )


def _check_shape(name: str, shape: Any, itemsize: int) -> None:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_NDIM
        or not all(_is_int(d) and d >= 1 for d in shape)
    ):
        raise InvalidValueError(
            f"array column {name!r} has shape {shape!r}; expected a list of 1 to {MAX_NDIM} positive integers"
        )
    size = itemsize
    for d in shape:
        size *= d
        if size > MAX_RECORD_BYTES:
            raise InvalidValueError(
                f"array column {name!r} has shape {shape!r}: over {MAX_RECORD_BYTES} bytes per record"
            )


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
        """Parse a shard entry; ValueError naming the field when it is not a valid one."""
        check_shard_entry(data)
        granule_records = data.get("granule_records")
        granules_xxh3 = data.get("granules_xxh3")
        if granules_xxh3 is not None or granule_records is not None:
            if not _is_int(granule_records) or not 1 <= granule_records <= data["records"]:
                raise InvalidValueError(
                    f"shard {data['name']}: granule_records must be an integer in "
                    f"[1, {data['records']}], got {granule_records!r}"
                )
            if not isinstance(granules_xxh3, str) or not _XXH3.match(granules_xxh3):
                raise InvalidValueError(
                    f"shard {data['name']}: granules_xxh3 must be 16 hex digits, got "
                    f"{granules_xxh3!r}"
                )
        return cls(
            name=data["name"],
            records=data["records"],
            bytes=data["bytes"],
            xxh3=data["xxh3"],
            granule_records=granule_records,
            granules_xxh3=granules_xxh3,
        )


def check_shard_entry(data: Any) -> None:
    """Check the fields of one manifest shard entry this code knows (others are allowed)."""
    if not isinstance(data, dict):
        raise InvalidValueError(f"a shard entry must be an object, got {data!r}")
    name = data.get("name")
    if not isinstance(name, str) or not (_SHARD_NAME.match(name) or _V1_SHARD_NAME.match(name)):
        raise InvalidValueError(
            f"shard name {name!r} is not a shard file name (part-<partition>-<build>-<seq>.arrow)"
        )
    for key, top in (("records", MAX_SHARD_RECORDS), ("bytes", MAX_SHARD_BYTES)):
        value = data.get(key)
        if not _is_int(value) or not 1 <= value <= top:
            raise InvalidValueError(
                f"shard {name}: {key} must be an integer in [1, {top}], got {value!r}"
            )
    if not isinstance(data.get("xxh3"), str) or not _XXH3.match(data["xxh3"]):
        raise InvalidValueError(
            f"shard {name}: xxh3 must be 16 hex digits, got {data.get('xxh3')!r}"
        )


def shard_build(name: str) -> str | None:
    """The build (``part-<partition>-<id>``) a shard file, or its temporary file, belongs to.

    None for names of version 1 stores and anything else: those belong to no live build.
    """
    match = _SHARD_NAME.match(name.lstrip(".").split(".arrow", 1)[0] + ".arrow")
    return match.group(1) if match else None


def shard_position(name: str) -> str | None:
    """``"<partition>-<seq>"`` of a version 2 shard name (what its file records), else None."""
    match = _SHARD_NAME.match(name)
    return f"{match.group(2)}-{match.group(3)}" if match else None


def _check_shard_order(shards: tuple[Shard, ...], version: int) -> None:
    """Shards must be in the order the writer made them: by partition, one build each, and
    within it by sequence number from 0 with no gap (a swapped entry would reorder data)."""
    previous: tuple[int, str, int] | None = None
    for shard in shards:
        match = _SHARD_NAME.match(shard.name)
        if match:
            key = (int(match.group(2)), match.group(1), int(match.group(3)))
        elif version == 1 and (old := _V1_SHARD_NAME.match(shard.name)):
            key = (int(old.group(1)), "", int(old.group(2)))
        else:
            raise InvalidValueError(
                f"shard name {shard.name!r} is not a version {version} shard name"
            )
        if previous is not None and key[0] == previous[0]:
            ok = key[1] == previous[1] and key[2] == previous[2] + 1
        else:
            ok = key[2] == 0 and (previous is None or key[0] > previous[0])
        if not ok:
            raise InvalidValueError(
                f"shard {shard.name} is out of order (shards go by partition, then sequence "
                f"number from 0 with no gap, one build per partition)"
            )
        previous = key


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a finished store holds; :meth:`to_bytes` is the exact content of ``manifest.json``."""

    columns: tuple[Column, ...]
    shards: tuple[Shard, ...]
    metadata: dict[str, Any] = field(default_factory=dict)  # user data, e.g. class names
    version: int = 0  # 0: the oldest version that holds these columns (see version_for)

    def __post_init__(self) -> None:
        if self.version == 0:
            object.__setattr__(self, "version", version_for(self.columns))

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
        except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, absurd nesting or digits
            raise CorruptStoreError(
                f"manifest {where} is not valid JSON ({err}); the store is damaged"
            ) from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CorruptStoreError(
                f"{where} is not an epochal store manifest (format {data.get('format') if isinstance(data, dict) else None!r}, expected {FORMAT!r})"
            )
        version = data.get("version")
        if not _is_int(version) or version < 1:
            raise CorruptStoreError(f"manifest {where} has a bad format version {version!r}")
        if version > FORMAT_VERSION:
            raise StoreError(
                f"store manifest {where} has format version {version}, newer than this epochal reads (<= {FORMAT_VERSION}); upgrade epochal"
            )
        try:
            manifest = _parse_body(data, version)
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptStoreError(f"manifest {where} is damaged: {err}") from err
        if (
            data.get("num_records") != manifest.num_records
            or data.get("fingerprint") != manifest.fingerprint
        ):
            raise CorruptStoreError(
                f"manifest {where} is damaged: its record count or fingerprint does not match its shard list"
            )
        return manifest


def _parse_body(data: dict[str, Any], version: int) -> Manifest:
    """The manifest a parsed JSON body describes; ValueError naming the first bad field."""
    columns, shards, metadata = data.get("columns"), data.get("shards"), data.get("metadata", {})
    if not isinstance(columns, list) or not columns:
        raise InvalidValueError(f"columns must be a non-empty list, got {columns!r}")
    if not isinstance(shards, list) or not shards:
        raise InvalidValueError(
            f"shards must be a non-empty list, got {shards!r} (a store has at least one record)"
        )
    if not isinstance(metadata, dict):
        raise InvalidValueError(f"metadata must be an object, got {metadata!r}")
    if not _is_int(data.get("num_records")) or not 1 <= data["num_records"] <= MAX_RECORDS:
        raise InvalidValueError(
            f"num_records must be an integer in [1, {MAX_RECORDS}], got {data.get('num_records')!r}"
        )
    if not isinstance(data.get("fingerprint"), str):
        raise InvalidValueError(f"fingerprint must be a string, got {data.get('fingerprint')!r}")
    manifest = Manifest(
        columns=tuple(Column.from_json(c) for c in columns),
        shards=tuple(Shard.from_json(s) for s in shards),
        metadata=metadata,
        version=version,
    )
    lists = [c.name for c in manifest.columns if c.kind == "list"]
    if lists and version < LIST_VERSION:
        raise InvalidValueError(
            f"list columns {lists} need format version {LIST_VERSION}, not {version}"
        )
    if len({c.name for c in manifest.columns}) != len(manifest.columns):
        raise InvalidValueError("a column name is repeated")
    if len({s.name for s in manifest.shards}) != len(manifest.shards):
        raise InvalidValueError("a shard is listed twice")
    if manifest.num_records > MAX_RECORDS:
        raise InvalidValueError(
            f"the shards hold {manifest.num_records} records, over {MAX_RECORDS}"
        )
    _check_shard_order(manifest.shards, version)
    return manifest


def version_for(columns: tuple[Column, ...]) -> int:
    """The format version a writer gives a store of ``columns``: the oldest that holds them."""
    return LIST_VERSION if any(c.kind == "list" for c in columns) else 2


def fingerprint_of(columns: tuple[Column, ...], shards: tuple[Shard, ...]) -> str:
    """A 16-hex-digit hash of the schema and every shard's records and checksum."""
    digest = xxhash.xxh3_64()
    digest.update(json.dumps([c.to_json() for c in columns]).encode())
    for shard in shards:
        digest.update(f"{shard.records}:{shard.xxh3};".encode())
    return digest.hexdigest()


def infer_column(name: str, value: Any, *, as_list: bool = False) -> Column:
    """The column a first value implies; raises StoreError for types a store cannot hold.

    A Python list of numbers is a ``list`` column (int64 or float64 elements); so is a 1-D
    numpy array when ``as_list`` (else it fixes an ``array`` column of its shape).
    """
    if isinstance(value, list) or (as_list and isinstance(value, np.ndarray)):
        return _list_column(name, value)
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


def _list_column(name: str, value: Any) -> Column:
    array = value if isinstance(value, np.ndarray) else None
    if array is None:
        kinds = {type(v) for v in value}
        if not kinds <= {int, float} or not value:
            raise StoreError(
                f"column {name!r} holds a list of {sorted(k.__name__ for k in kinds) or 'nothing'}; "
                f"a list column holds numbers and its first value needs at least one (or pass "
                f"a 1-D numpy array of the element dtype)"
            )
        try:
            array = np.asarray(value, dtype=np.float64 if float in kinds else np.int64)
        except OverflowError:
            raise StoreError(
                f"column {name!r} holds an int outside int64 in its first list; pass a numpy "
                f"array of the element dtype"
            ) from None
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise StoreError(
            f"column {name!r} is a list column: expected 1-D int/uint/float values, got "
            f"ndarray[{array.dtype}, {list(array.shape)}]"
        )
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    return Column(name=name, kind="list", dtype=dtype.str)
