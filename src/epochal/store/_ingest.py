"""Read common dataset layouts as records for :func:`epochal.write` (``epochal build``).

Formats (``detect`` picks one from the path):

- ``imagefolder``: ``root/<class name>/*.jpg|png|...`` -> ``{"image": bytes, "label": int,
  "path": str}``; labels follow the sorted class names, which go into the manifest metadata
  as ``classes``. Images are stored encoded (decode in the transform), as the files are,
  or, with ``resize`` and/or ``jpeg_quality``, decoded, resized so that the shorter side
  is ``resize`` pixels (bicubic, aspect ratio kept) and re-encoded as JPEG (RGB or
  grayscale); the options go into the manifest metadata as ``image_transform``.
- ``jsonl``: one JSON object per line; ``csv``: a header row, types inferred by pyarrow;
  ``parquet``: a file or a folder of ``*.parquet`` files. Lists of numbers become numpy
  arrays, other nested values JSON strings, dates ISO strings.
- ``npy``: one array, records along the first axis, the column named after the file;
  ``npz``: one column per array (all the same length).
- ``webdataset``: a ``.tar`` file or a folder of them; members sharing a key
  (``dir/name`` before the first dot of the file name) form one record
  ``{"__key__": key, "<extension>": bytes, ...}``.

Every problem with the input is a StoreError naming the file (and line, where it has one).

Parallel builds: ``Ingest.parts`` (where the format allows it) gives the same records as
picklable pieces in order (a run of images, a byte range of lines, a row group, a batch,
one tar file), so a process pool can parse them while the parent writes in order.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epochal._errors import UsageError
from epochal.store._errors import StoreError
from epochal.store._format import Column

__all__ = ["FORMATS", "IMAGE_EXTENSIONS", "Ingest", "Part", "detect", "ingest", "line_ranges"]

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


# a piece of an input: called in a pool worker, gives that piece's records in order
Part = Callable[[], Iterator[dict[str, Any]]]
# large enough to amortise a round trip to a worker (~1 ms) over 50-200 ms of parsing; the
# last parts shrink (see _taper) so that the last of them does not leave a worker idle
_PART_IMAGES = 64  # images per part
_PART_BYTES = 1 << 20  # bytes of JSON lines per part
_TAPER = 8  # near the end a part is 1/_TAPER of what is left, down to 1/8 of a full part


def _taper(left: int, full: int) -> int:
    """The size of the next part when ``left`` items (or bytes) remain: ``full`` until the
    last ``_TAPER`` full parts, then shrinking geometrically to ``full / 8``.

    A worker that takes the last part finishes up to that part's time after the others:
    with 1 MiB or 64-image parts (~70-200 ms each) that idled a core for ~5% of a 2-second
    build. Which records form a part never changes the store (shards are cut by record
    sizes alone).
    """
    return max(1, full // 8, min(full, left // _TAPER))


@dataclass
class Ingest:
    """Records read from an input, with what goes into the manifest and the count if known.

    ``parts``, when not None, yields the same records as ``records`` as picklable pieces,
    in order (for ``epochal build --workers``); use one or the other, not both.
    """

    records: Iterator[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    total: int | None = None
    parts: Iterable[Part] | None = None
    columns: tuple[Column, ...] | None = None  # the schema when the input fixes it (tokens)


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


def ingest(
    src: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    resize: int | None = None,
    jpeg_quality: int | None = None,
) -> Ingest:
    """Open ``src`` in format ``fmt`` (``"auto"`` detects it) as records.

    Args:
        src: the input file or folder.
        fmt: one of :data:`FORMATS`, or ``"auto"``.
        resize: image folders only: scale every image so that its shorter side has this
            many pixels, then store it as JPEG.
        jpeg_quality: image folders only: store every image re-encoded as JPEG at this
            quality (1-95; default 90 when ``resize`` is given).

    Raises:
        UsageError: ``resize``/``jpeg_quality`` out of range or given for another format.
        StoreError: the input cannot be read.
    """
    path = os.fspath(src)
    if fmt == "auto":
        fmt = detect(path)
    if fmt not in FORMATS:
        raise StoreError(f"unknown input format {fmt!r}; choose one of: auto, {', '.join(FORMATS)}")
    if not os.path.exists(path):
        raise StoreError(f"input {path!r} does not exist")
    transform = _image_transform(fmt, resize, jpeg_quality)
    readers: dict[str, Callable[[str], Ingest]] = {
        "imagefolder": _image_folder,
        "jsonl": _jsonl,
        "csv": _csv,
        "parquet": _parquet,
        "npy": _npy,
        "npz": _npz,
        "webdataset": _webdataset,
    }
    result = _image_folder(path, transform) if transform is not None else readers[fmt](path)
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


@dataclass(frozen=True)
class _Transform:
    """What ``epochal build --resize/--jpeg-quality`` does to every image (in the workers)."""

    resize: int | None
    quality: int


def _image_transform(fmt: str, resize: int | None, quality: int | None) -> _Transform | None:
    if resize is None and quality is None:
        return None
    if fmt != "imagefolder":
        raise UsageError(
            f"--resize and --jpeg-quality apply to image folders only; the input is {fmt}"
        )
    if resize is not None and resize < 1:
        raise UsageError(f"--resize must be at least 1 pixel, got {resize}")
    if quality is not None and not 1 <= quality <= 95:
        # Pillow: above 95 JPEG files grow without looking better
        raise UsageError(f"--jpeg-quality must be from 1 to 95, got {quality}")
    try:
        # here, before the pool forks, so that no worker spends its time importing them
        import PIL.Image
        import PIL.JpegImagePlugin  # noqa: F401
    except ImportError:
        raise UsageError(
            "--resize and --jpeg-quality need Pillow: pip install 'epochal[images]'"
        ) from None
    return _Transform(resize, 90 if quality is None else quality)


def _reencode(data: bytes, transform: _Transform, where: str) -> bytes:
    """``data`` decoded, shorter side scaled to ``transform.resize``, encoded as JPEG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            # JPEG holds gray or RGB: palettes, alpha and CMYK become RGB, gray stays gray
            image = opened.convert("L" if opened.mode in ("1", "L", "LA") else "RGB")
    except UnidentifiedImageError:  # its message names a BytesIO object, not the file
        raise StoreError(f"cannot decode image {where}: not a format Pillow reads") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise StoreError(f"cannot decode image {where}: {err}") from None
    if transform.resize is not None:
        w, h = image.size
        scale = transform.resize / min(w, h)
        # round half up, and at least one pixel for very thin images
        size = (max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=transform.quality)
    return out.getvalue()


def _image_folder(root: str, transform: _Transform | None = None) -> Ingest:
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

    metadata: dict[str, Any] = {"classes": classes}
    if transform is not None:
        metadata["image_transform"] = {
            "resize_shorter_side": transform.resize,
            "format": "JPEG",
            "quality": transform.quality,
        }
    parts = []
    start = 0
    while start < len(files):
        stop = start + _taper(len(files) - start, _PART_IMAGES)
        parts.append(functools.partial(_image_records, root, files[start:stop], transform))
        start = stop
    return Ingest(_image_records(root, files, transform), metadata, len(files), parts)


def _image_records(
    root: str, files: list[tuple[str, int]], transform: _Transform | None = None
) -> Iterator[dict[str, Any]]:
    for rel, label in files:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        if transform is not None:
            data = _reencode(data, transform, rel)
        yield {"image": data, "label": label, "path": rel}


def _jsonl(path: str) -> Ingest:
    def records() -> Iterator[dict[str, Any]]:
        with open(path, encoding="utf-8") as f:
            yield from _json_lines(path, f, 1)

    return Ingest(records(), parts=_jsonl_parts(path))


def _json_lines(
    path: str, lines: Iterable[str], first: int | Callable[[], int]
) -> Iterator[dict[str, Any]]:
    """The records of JSON ``lines``; ``first`` is the number of the first line (or gives
    it: only an error message needs it)."""
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise StoreError(
                f"{path}:{_lineno(first, offset)}: not valid JSON ({err.msg})"
            ) from None
        if not isinstance(value, dict):
            raise StoreError(
                f"{path}:{_lineno(first, offset)}: expected a JSON object, got {type(value).__name__}"
            )
        yield _row(value)


def _lineno(first: int | Callable[[], int], offset: int) -> int:
    return (first if isinstance(first, int) else first()) + offset


def _spans(path: str, part_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, size) of byte ranges of whole lines of about ``part_bytes`` each, the last
    ones smaller (see ``_taper``); found by seeking, without reading the file."""
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        start = 0
        while start < total:
            f.seek(start + _taper(total - start, part_bytes))
            f.readline()  # end the part at a line break
            stop = min(f.tell(), total)
            yield start, stop - start
            start = stop


def line_ranges(path: str, part_bytes: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(start, size, number of the first line) of byte ranges of whole lines of about
    ``part_bytes`` each (default ``_PART_BYTES``, read at the call; the last ones smaller,
    see ``_taper``): the parts a pool parses (or tokenizes) one per task."""
    lineno = 1
    with open(path, "rb") as f:
        for start, size in _spans(path, _PART_BYTES if part_bytes is None else part_bytes):
            yield start, size, lineno
            lineno += f.read(size).count(b"\n")


def _jsonl_parts(path: str) -> Iterator[Part]:
    """Byte ranges of whole lines. The number of a part's first line is only counted when
    the part has an error to report: counting every part's lines in the parent of a
    ``--workers`` build read the whole input there, ~3% of a JSONL build's time, serially."""
    for start, size in _spans(path, _PART_BYTES):
        yield functools.partial(_jsonl_range, path, start, size)


def _jsonl_range(path: str, start: int, size: int) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(size)
    number = functools.partial(_first_line, path, start)  # counted only for an error
    # the same line splitting (universal newlines) and decoding as reading the whole file
    yield from _json_lines(path, io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"), number)


def _first_line(path: str, start: int) -> int:
    """The number of the line that starts at byte ``start`` (line breaks before it + 1)."""
    count = 0
    with open(path, "rb") as f:
        while start > 0:
            chunk = f.read(min(start, 1 << 20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            start -= len(chunk)
    return count + 1


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
    # parts: Arrow parses (and infers types) in the parent; the workers make the rows
    parts = (functools.partial(_batch_rows, batch, path) for batch in _batches(reader, path))
    return Ingest(_arrow_rows(iter(reader), path), parts=parts)


def _batch_rows(batch: Any, where: str) -> Iterator[dict[str, Any]]:
    yield from _arrow_rows(iter([batch]), where)


def _batches(reader: Any, where: str) -> Iterator[Any]:
    import pyarrow as pa

    try:
        yield from reader
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"cannot read {where}: {err}") from err


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

    parts = [
        functools.partial(_row_group, name, group)
        for name, pf in zip(files, opened, strict=True)
        for group in range(pf.num_row_groups)
    ]
    return Ingest(records(), total=sum(pf.metadata.num_rows for pf in opened), parts=parts)


def _row_group(path: str, group: int) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).read_row_group(group).to_batches()
    except (pa.ArrowException, OSError) as err:
        raise StoreError(f"cannot read {path}: {err}") from err
    yield from _arrow_rows(iter(batches), path)


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
    n = int(next(iter(columns.values())).shape[0])
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
            yield from _tar_records(name)

    return Ingest(records(), parts=[functools.partial(_tar_records, name) for name in files])


def _tar_records(name: str) -> Iterator[dict[str, Any]]:
    try:
        with tarfile.open(name, "r:*") as tar:
            key: str | None = None
            record: dict[str, Any] = {}
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
