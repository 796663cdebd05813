"""Read common dataset layouts as records for :func:`epochal.write` (``epochal build``).

Formats (``detect`` picks one from the path):

- ``imagefolder``: ``root/<class name>/*.jpg|png|...`` -> ``{"image": bytes, "label": int,
  "path": str}``; labels follow the sorted class names, which go into the manifest metadata
  as ``classes``. Images are stored encoded (decode in the transform).
- ``jsonl``: one JSON object per line; ``csv``: a header row, types inferred by pyarrow;
  ``parquet``: a file or a folder of ``*.parquet`` files. Lists of numbers become numpy
  arrays, other nested values JSON strings, dates ISO strings.
- ``npy``: one array, records along the first axis, the column named after the file;
  ``npz``: one column per array (all the same length).
- ``webdataset``: a ``.tar`` file or a folder of them; members sharing a key
  (``dir/name`` before the first dot of the file name) form one record
  ``{"__key__": key, "<extension>": bytes, ...}``.

Every problem with the input is a StoreError naming the file (and line, where it has one).
"""

from __future__ import annotations

import datetime
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epochal.store._errors import StoreError

__all__ = ["FORMATS", "IMAGE_EXTENSIONS", "Ingest", "detect", "ingest"]

FORMATS = ("imagefolder", "jsonl", "csv", "parquet", "npy", "npz", "webdataset")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".npz": "npz",
    ".tar": "webdataset",
}


@dataclass
class Ingest:
    """Records read from an input, with what goes into the manifest and the count if known."""

    records: Iterator[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    total: int | None = None


def detect(src: str) -> str:
    """The format of ``src`` from its suffix, or from the files in it when it is a folder."""
    if not os.path.exists(src):
        raise StoreError(f"input {src!r} does not exist")
    if os.path.isfile(src):
        fmt = _SUFFIXES.get(os.path.splitext(src)[1].lower())
        if fmt is None:
            raise StoreError(
                f"cannot tell the format of {src!r} from its suffix; use one of "
                f"{', '.join(sorted(_SUFFIXES))} or pass --format"
            )
        return fmt
    entries = sorted(os.listdir(src))
    files = [e for e in entries if os.path.isfile(os.path.join(src, e))]
    for suffix, fmt in (("parquet", "parquet"), ("pq", "parquet"), ("tar", "webdataset")):
        if files and all(f.lower().endswith(f".{suffix}") for f in files):
            return fmt
    if any(os.path.isdir(os.path.join(src, e)) for e in entries):
        return "imagefolder"
    raise StoreError(
        f"cannot tell the format of folder {src!r}: expected class sub-folders of images, "
        f"or only .parquet or only .tar files; pass --format"
    )


def ingest(src: str | os.PathLike[str], fmt: str = "auto") -> Ingest:
    """Open ``src`` in format ``fmt`` (``"auto"`` detects it) as records."""
    path = os.fspath(src)
    if fmt == "auto":
        fmt = detect(path)
    if fmt not in FORMATS:
        raise StoreError(f"unknown input format {fmt!r}; choose one of: auto, {', '.join(FORMATS)}")
    if not os.path.exists(path):
        raise StoreError(f"input {path!r} does not exist")
    reader = {
        "imagefolder": _image_folder,
        "jsonl": _jsonl,
        "csv": _csv,
        "parquet": _parquet,
        "npy": _npy,
        "npz": _npz,
        "webdataset": _webdataset,
    }[fmt]
    result = reader(path)
    result.metadata.setdefault("source_format", fmt)
    return result


def _normalise(value: Any) -> Any:
    """A JSON/Arrow value as something a store column holds."""
    if isinstance(value, list):
        array = np.asarray(value) if value else np.asarray(value, dtype=np.float64)
        if array.dtype.kind in "biuf":
            return array
        return json.dumps(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _normalise(v) for k, v in record.items()}


def _image_folder(root: str) -> Ingest:
    classes = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
    files: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for entry in sorted(os.listdir(os.path.join(root, name))):
            if entry.lower().endswith(IMAGE_EXTENSIONS):
                files.append((f"{name}/{entry}", label))
    if not files:
        raise StoreError(
            f"image folder {root!r} has no images (expected root/<class>/*{'|*'.join(IMAGE_EXTENSIONS)})"
        )

    def records() -> Iterator[dict[str, Any]]:
        for rel, label in files:
            with open(os.path.join(root, rel), "rb") as f:
                yield {"image": f.read(), "label": label, "path": rel}

    return Ingest(records(), {"classes": classes}, len(files))


def _jsonl(path: str) -> Ingest:
    def records() -> Iterator[dict[str, Any]]:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    raise StoreError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(value, dict):
                    raise StoreError(
                        f"{path}:{lineno}: expected a JSON object, got {type(value).__name__}"
                    )
                yield _row(value)

    return Ingest(records())


def _arrow_rows(batches: Iterator[Any], where: str) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    try:
        for batch in batches:
            for row in batch.to_pylist():
                yield _row(row)
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"cannot read {where}: {err}") from err


def _csv(path: str) -> Ingest:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(path)
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"cannot read CSV {path!r}: {err}") from err
    return Ingest(_arrow_rows(iter(reader), path))


def _parquet(path: str) -> Ingest:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = (
        [path]
        if os.path.isfile(path)
        else [os.path.join(path, f) for f in sorted(os.listdir(path))]
    )
    try:
        opened = [pq.ParquetFile(f) for f in files]
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"cannot read Parquet {path!r}: {err}") from err

    def records() -> Iterator[dict[str, Any]]:
        for name, pf in zip(files, opened, strict=True):
            yield from _arrow_rows(pf.iter_batches(batch_size=4096), name)

    return Ingest(records(), total=sum(pf.metadata.num_rows for pf in opened))


def _load_numpy(path: str, **kwargs: Any) -> Any:
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except (OSError, ValueError) as err:
        raise StoreError(f"cannot read {path!r} as a numpy file: {err}") from err


def _columns_ingest(columns: dict[str, np.ndarray], path: str) -> Ingest:
    lengths = {name: (a.shape[0] if a.ndim else None) for name, a in columns.items()}
    if not columns or None in lengths.values() or len(set(lengths.values())) != 1:
        raise StoreError(
            f"{path!r}: need arrays with one shared first axis of records, got shapes {lengths}"
        )
    n = next(iter(lengths.values()))
    return Ingest(({name: a[i] for name, a in columns.items()} for i in range(n)), total=n)


def _npy(path: str) -> Ingest:
    name = os.path.splitext(os.path.basename(path))[0]
    return _columns_ingest({name: _load_numpy(path, mmap_mode="r")}, path)


def _npz(path: str) -> Ingest:
    with _load_numpy(path) as archive:
        columns = {name: archive[name] for name in archive.files}
    return _columns_ingest(columns, path)


def _webdataset(path: str) -> Ingest:
    files = (
        [path]
        if os.path.isfile(path)
        else [os.path.join(path, f) for f in sorted(os.listdir(path))]
    )

    def records() -> Iterator[dict[str, Any]]:
        for name in files:
            try:
                with tarfile.open(name, "r:*") as tar:
                    key, record = None, {}
                    for member in tar:
                        if not member.isfile():
                            continue
                        directory, base = os.path.split(member.name)
                        stem, dot, ext = base.partition(".")
                        if not dot:
                            raise StoreError(
                                f"{name}: member {member.name!r} has no extension (WebDataset key.ext)"
                            )
                        this = f"{directory}/{stem}" if directory else stem
                        if this != key and record:
                            yield record
                            record = {}
                        key = this
                        record["__key__"] = this
                        extracted = tar.extractfile(member)
                        assert extracted is not None
                        record[ext] = extracted.read()
                    if record:
                        yield record
            except (tarfile.TarError, OSError) as err:
                raise StoreError(f"cannot read tar {name!r}: {err}") from err

    return Ingest(records())
