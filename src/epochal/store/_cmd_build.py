"""``epochal build SRC DEST``: ingest a folder or file into a store, with a progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

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
    tokenizer: str | None = None
    """Build a token store from JSONL text with this tokenizer, 'package.module:function' (str -> list[int])."""
    text_field: str = "text"
    """With --tokenizer: the JSONL field holding each document's text."""
    eos_id: int | None = None
    """With --tokenizer: token appended after every document (the document separator)."""
    vocab_size: int | None = None
    """With --tokenizer: vocabulary size (uint16 up to 65,536, else uint32); default: the tokenizer's own."""
    block_tokens: int = 65_536
    """With --tokenizer: tokens per store record (the stream is stored in blocks of this many)."""


def main(argv: list[str]) -> int:
    """Run ``epochal build``; returns the exit status."""
    cfg = tyro.cli(BuildConfig, args=argv, prog="epochal build")
    from tqdm import tqdm

    from epochal.store._errors import StoreError
    from epochal.store._format import MANIFEST_NAME
    from epochal.store._fs import locate
    from epochal.store._ingest import ingest
    from epochal.store._writer import write

    if cfg.shard_size_mb <= 0:
        raise StoreError(f"--shard-size-mb must be positive, got {cfg.shard_size_mb}")
    if not cfg.overwrite and locate(cfg.dest).exists(MANIFEST_NAME):  # fail before any work
        raise StoreError(
            f"{cfg.dest} already holds a finished store; pass --overwrite to replace it"
        )
    if cfg.tokenizer is not None:  # token stores (issue 17): text -> blocks of tokens
        from epochal.store._tokenize import token_source

        source = token_source(
            cfg.src,
            cfg.tokenizer,
            cfg.text_field,
            cfg.eos_id,
            cfg.vocab_size,
            block_tokens=cfg.block_tokens,
        )
    else:
        source = ingest(cfg.src, cfg.format)
    start = time.perf_counter()
    with tqdm(total=source.total, unit=" rec", unit_scale=True, desc="building") as bar:

        def counted():
            for record in source.records:
                yield record
                bar.update(1)

        try:
            manifest = write(
                counted(),
                cfg.dest,
                shard_size=int(cfg.shard_size_mb * (1 << 20)),
                metadata=source.metadata,
                overwrite=cfg.overwrite,
            )
        except OSError as err:
            raise StoreError(f"cannot write {cfg.dest!r}: {err}") from err
    seconds = time.perf_counter() - start
    print(
        f"built {cfg.dest}: {manifest.num_records} records, {manifest.num_bytes / 2**20:.1f} MiB in "
        f"{len(manifest.shards)} shards, {manifest.num_records / max(seconds, 1e-9):,.0f} records/s"
    )
    return 0
