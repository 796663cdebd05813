"""``epochal build SRC DEST``: ingest a folder or file into a store, with a progress bar."""

from __future__ import annotations

import math
import sys
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import tyro

from epochal._errors import Error, UsageError
from epochal.store._errors import StoreError

__all__ = ["BuildConfig", "main"]


@dataclass(kw_only=True)
class BuildConfig:
    """Build an epochal store from an image folder, JSONL, CSV, Parquet, .npy/.npz or WebDataset tars."""

    src: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SRC")]
    """Input: root/<class>/*.jpg, a .jsonl/.csv/.parquet/.npy/.npz/.tar file, or a folder of .parquet or .tar files."""
    dest: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DEST")]
    """Where the store goes: a local path or an fsspec URL such as s3://bucket/name."""
    format: Literal[
        "auto", "imagefolder", "jsonl", "csv", "parquet", "npy", "npz", "webdataset"
    ] = "auto"
    """Input format; auto picks it from the suffix or the folder's contents."""
    shard_size_mb: float = 64.0
    """Target size of one shard in MiB."""
    overwrite: bool = False
    """Replace a finished store at DEST."""
    workers: Annotated[int | None, tyro.conf.arg(metavar="INT")] = None
    """Processes that parse the input (default: this machine's cores); the store is the same for any number."""
    resize: Annotated[int | None, tyro.conf.arg(metavar="PIXELS")] = None
    """Image folders: scale each image so its shorter side is PIXELS (bicubic, aspect kept) and store it as JPEG."""
    jpeg_quality: Annotated[int | None, tyro.conf.arg(metavar="1-95")] = None
    """Image folders: store each image re-encoded as JPEG at this quality (default 90 with --resize)."""
    tokenizer: Annotated[str | None, tyro.conf.arg(metavar="MODULE:FUNCTION")] = None
    """Build a token store from JSONL text with this tokenizer, 'package.module:function' (str -> list[int])."""
    text_field: str = "text"
    """With --tokenizer: the JSONL field holding each document's text."""
    eos_id: Annotated[int | None, tyro.conf.arg(metavar="INT")] = None
    """With --tokenizer: token appended after every document (the document separator)."""
    vocab_size: Annotated[int | None, tyro.conf.arg(metavar="INT")] = None
    """With --tokenizer: vocabulary size (uint16 up to 65,536, else uint32); default: the tokenizer's own."""


def main(argv: list[str]) -> int:
    """Run ``epochal build``; returns the exit status."""
    cfg = tyro.cli(BuildConfig, args=argv, prog="epochal build")
    shard_size = cfg.shard_size_mb * (1 << 20)
    if not math.isfinite(shard_size) or shard_size < 1:
        print(
            f"epochal build: error: --shard-size-mb must be a finite number of at least one byte "
            f"(>= {1 / (1 << 20):.2g}), got {cfg.shard_size_mb}",
            file=sys.stderr,
        )
        return 2
    if cfg.workers is not None and cfg.workers < 1:
        print(
            f"epochal build: error: --workers must be at least 1, got {cfg.workers}",
            file=sys.stderr,
        )
        return 2
    try:
        return _build(cfg, int(shard_size))
    except Error:
        raise
    except Exception as err:
        # errors of the cloud SDKs (no credentials, no bucket) are user errors too
        if type(err).__module__.split(".")[0] in ("botocore", "google", "azure", "aiohttp"):
            raise StoreError(
                f"cannot write {cfg.dest!r}: {type(err).__name__}: {err}; check the credentials "
                f"and the bucket (e.g. AWS_ACCESS_KEY_ID / AWS_PROFILE for s3://)"
            ) from err
        raise


class _SourceError(StoreError):
    """The input could not be read (an empty .npy, a broken .npz, ...)."""


def _build(cfg: BuildConfig, shard_size: int) -> int:
    from tqdm import tqdm

    from epochal.store._build_pool import default_workers, parallel_blocks
    from epochal.store._format import MANIFEST_NAME
    from epochal.store._fs import locate
    from epochal.store._ingest import ingest
    from epochal.store._record_blocks import Blocks
    from epochal.store._writer import write

    if not cfg.overwrite and locate(cfg.dest).exists(MANIFEST_NAME):  # fail before any work
        raise StoreError(
            f"{cfg.dest} already holds a finished store; pass --overwrite to replace it"
        )
    try:
        if cfg.tokenizer is not None:  # token stores (issue 17): text -> documents' tokens
            if cfg.resize is not None or cfg.jpeg_quality is not None:
                raise UsageError("--resize and --jpeg-quality do not apply with --tokenizer")
            from epochal.store._tokenize import token_source

            source = token_source(
                cfg.src,
                cfg.tokenizer,
                cfg.text_field,
                cfg.eos_id,
                cfg.vocab_size,
            )
        else:
            source = ingest(cfg.src, cfg.format, resize=cfg.resize, jpeg_quality=cfg.jpeg_quality)
    except _INPUT_ERRORS as err:
        raise _SourceError(f"cannot read {cfg.src} as input: {_describe(err)}") from err
    start = time.perf_counter()
    with tqdm(
        total=source.total, unit=" rec", unit_scale=True, desc="building", disable=None
    ) as bar:

        def counted():
            records = iter(source.records)
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    return
                except _INPUT_ERRORS as err:
                    raise _SourceError(f"cannot read {cfg.src}: {_describe(err)}") from err
                yield record
                bar.update(1)

        def counted_blocks():
            assert source.parts is not None  # only called when the format has parts
            blocks = parallel_blocks(source.parts, workers, source.columns)
            while True:
                try:
                    block = next(blocks)
                except StopIteration:
                    return
                except Error:  # bad records: already one clear line
                    raise
                except _INPUT_ERRORS as err:  # raised reading a part, here or in a worker
                    raise _SourceError(f"cannot read {cfg.src}: {_describe(err)}") from err
                yield block
                bar.update(len(block))

        workers = default_workers() if cfg.workers is None else cfg.workers
        # formats without parts (.npy/.npz: already columns) are written in this process
        records: Iterable[Any] = Blocks(counted_blocks()) if source.parts is not None else counted()
        try:
            manifest = write(
                records,
                cfg.dest,
                shard_size=shard_size,
                metadata=source.metadata,
                overwrite=cfg.overwrite,
            )
        except OSError as err:
            raise StoreError(f"cannot write {cfg.dest!r}: {err}") from err
    seconds = time.perf_counter() - start
    print(
        f"built {cfg.dest}: {manifest.num_records} records, {manifest.num_bytes / 2**20:.1f} MiB in "
        f"{len(manifest.shards)} shard{'s' if len(manifest.shards) != 1 else ''}, "
        f"{manifest.num_records / max(seconds, 1e-9):,.0f} records/s"
    )
    return 0


# what a damaged or unexpected input file raises from the readers ingest uses
_INPUT_ERRORS = (EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError, KeyError)


def _describe(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, EOFError):
        text = f"the file is empty or cut short ({text or 'no data'})"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
