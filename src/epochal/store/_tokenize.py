"""Token stores: JSONL text through a user's tokenizer into blocks of tokens.

``epochal build corpus.jsonl DEST --tokenizer mypkg.tok:encode`` reads the ``text`` field
of every line, tokenizes it with ``encode`` (any ``str -> list[int]``; a Hugging Face
``Encoding`` result is read through its ``.ids``), appends ``--eos-id`` after every
document, and writes the stream as records of ``block_tokens`` tokens each:
``{"tokens": uint16|uint32[block_tokens], "length": int}`` (``length`` is the block's real
tokens: ``block_tokens`` except in the last block, which is zero-padded). Fixed-size
records keep the store's zero-copy gathers; :func:`epochal.tokens` reads windows across
blocks and takes the EOS id from the manifest metadata ``{"tokens": {...}}``.

The dtype follows the vocabulary size (``--vocab-size``, else the tokenizer's own
``vocab_size`` or ``get_vocab_size()``): uint16 below 65,536 ids, uint32 above.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from epochal.store._errors import StoreError
from epochal.store._ingest import Ingest

__all__ = [
    "DEFAULT_BLOCK_TOKENS",
    "load_tokenizer",
    "token_blocks",
    "token_dtype",
    "token_source",
    "vocab_of",
]

DEFAULT_BLOCK_TOKENS = 1 << 16  # tokens per record: 128 KiB of uint16, a cheap gather unit


def load_tokenizer(spec: str) -> Callable[[str], Any]:
    """The callable named by ``"package.module:function"`` (attributes may be dotted)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise StoreError(f"--tokenizer must look like 'package.module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise StoreError(f"--tokenizer {spec!r}: cannot import {module_name!r} ({err})") from err
    for part in attr.split("."):
        if not hasattr(target, part):
            raise StoreError(f"--tokenizer {spec!r}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise StoreError(f"--tokenizer {spec!r} is not callable (got {type(target).__name__})")
    return target


def vocab_of(tokenizer: Any) -> int | None:
    """The tokenizer's vocabulary size when it says (``vocab_size`` or ``get_vocab_size()``)."""
    size = getattr(tokenizer, "vocab_size", None)
    if size is None and callable(getattr(tokenizer, "get_vocab_size", None)):
        size = tokenizer.get_vocab_size()
    return None if size is None else int(size)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for fewer than 65,536 token ids, else uint32."""
    if vocab_size < 1 or vocab_size > 1 << 32:
        raise StoreError(f"vocabulary size must be in [1, 2**32], got {vocab_size}")
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def jsonl_texts(path: str, field: str) -> Iterator[str]:
    """The ``field`` string of every line of a JSONL file (errors name the line)."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise StoreError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            text = row.get(field) if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise StoreError(
                    f"{path}:{number}: no string field {field!r} (pass --text-field); got "
                    f"keys {sorted(row) if isinstance(row, dict) else type(row).__name__}"
                )
            yield text


def token_blocks(
    texts: Iterable[str],
    tokenize: Callable[[str], Any],
    *,
    dtype: np.dtype,
    eos_id: int | None,
    block_tokens: int = DEFAULT_BLOCK_TOKENS,
) -> Iterator[dict[str, Any]]:
    """Records of ``block_tokens`` tokens of the documents' stream (EOS after each)."""
    limit = np.iinfo(dtype).max
    block = np.zeros(block_tokens, dtype=dtype)
    fill = 0
    for number, text in enumerate(texts):
        ids = tokenize(text)
        ids = getattr(ids, "ids", ids)  # a Hugging Face Encoding
        doc = np.asarray(ids, dtype=np.int64).reshape(-1)
        if eos_id is not None:
            doc = np.append(doc, eos_id)
        if doc.size and (doc.min() < 0 or doc.max() > limit):
            bad = int(doc[(doc < 0) | (doc > limit)][0])
            raise StoreError(
                f"document {number}: token id {bad} does not fit {dtype} (ids 0..{limit}); "
                f"pass the tokenizer's --vocab-size"
            )
        at = 0
        while at < doc.size:
            take = min(block_tokens - fill, doc.size - at)
            block[fill : fill + take] = doc[at : at + take]
            fill, at = fill + take, at + take
            if fill == block_tokens:
                yield {"tokens": block.copy(), "length": block_tokens}
                fill = 0
    if fill:
        block[fill:] = 0
        yield {"tokens": block.copy(), "length": fill}


def token_source(
    src: str,
    tokenizer: str,
    field: str = "text",
    eos_id: int | None = None,
    vocab_size: int | None = None,
    *,
    block_tokens: int = DEFAULT_BLOCK_TOKENS,
) -> Ingest:
    """The blocks of a JSONL file's token stream, with the manifest metadata, for ``write``."""
    if not src.endswith((".jsonl", ".ndjson")):
        raise StoreError(f"--tokenizer builds from a .jsonl file of texts, got {src!r}")
    tokenize = load_tokenizer(tokenizer)
    vocab = vocab_size if vocab_size is not None else vocab_of(tokenize)
    if vocab is None:
        raise StoreError(
            f"cannot tell the vocabulary size of {tokenizer!r}: pass --vocab-size (it picks "
            f"uint16 or uint32 tokens)"
        )
    if block_tokens < 1:
        raise StoreError(f"--block-tokens must be a positive number of tokens, got {block_tokens}")
    if eos_id is not None and not 0 <= eos_id < vocab:
        raise StoreError(f"--eos-id {eos_id} is outside the vocabulary [0, {vocab})")
    dtype = token_dtype(vocab)
    blocks = token_blocks(
        jsonl_texts(src, field), tokenize, dtype=dtype, eos_id=eos_id, block_tokens=block_tokens
    )
    meta = {
        "tokens": {
            "eos_id": eos_id,
            "vocab_size": vocab,
            "dtype": dtype.name,
            "block_tokens": block_tokens,
            "tokenizer": tokenizer,
        }
    }
    return Ingest(records=blocks, metadata=meta)
