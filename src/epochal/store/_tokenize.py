"""Token stores: JSONL text through a user's tokenizer into a column of documents' tokens.

``epochal build corpus.jsonl DEST --tokenizer mypkg.tok:encode`` reads the ``text`` field
of every line, tokenizes it with ``encode`` (any ``str -> list[int]``; a Hugging Face
``Encoding`` result is read through its ``.ids``), appends ``--eos-id`` after every
document, and writes one record per document: ``{"tokens": uint16|uint32[n]}``, a list
column (variable length, Arrow ``large_list``). :func:`epochal.tokens` reads the documents
in record order as one stream, in place from the shards' memory maps, with the document
boundaries from the column's offsets and the EOS id from the manifest metadata
``{"tokens": {...}}``.

Why one record per document rather than fixed-size blocks of the flat stream (the layout
before; such stores still read): the store keeps what the corpus is (document i is record
i, for inspection, filtering or export), the boundaries need no separator token, and a
parallel build needs nothing but the pool: parts of lines tokenized in ``--workers``
processes, written in order, give the same store for any number of workers (blocks would
be cut per part, each part's last block padded).

The dtype follows the vocabulary size (``--vocab-size``, else the tokenizer's own
``vocab_size`` or ``get_vocab_size()``): uint16 up to 65,536 ids, uint32 above. A
tokenizer that cannot be loaded, raises or returns anything but integers is a StoreError
naming the tokenizer (and the line): one line from the command, exit status 1.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from epochal.store._errors import StoreError
from epochal.store._format import Column
from epochal.store._ingest import Ingest, line_ranges

__all__ = [
    "DEFAULT_BLOCK_TOKENS",
    "load_tokenizer",
    "token_blocks",
    "token_dtype",
    "token_source",
    "vocab_of",
]

DEFAULT_BLOCK_TOKENS = 1 << 16  # tokens per record of the block layout (token_blocks)
_PART_BYTES = 1 << 20  # bytes of JSON lines per part: tokenizing costs more than parsing
COLUMN = "tokens"


@functools.cache  # per process: a pool worker loads the tokenizer once, by name
def load_tokenizer(spec: str) -> Callable[[str], Any]:
    """The callable named by ``"package.module:function"`` (attributes may be dotted)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise StoreError(f"--tokenizer must look like 'package.module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raises as it runs
        raise StoreError(
            f"--tokenizer {spec!r}: cannot import {module_name!r} ({type(err).__name__}: "
            f"{_first_line(err)})"
        ) from err
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
            text = _text(path, number, line, field)
            if text is not None:
                yield text


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else "no message"


def document_tokens(
    text: str, tokenize: Callable[[str], Any], *, dtype: np.dtype, eos_id: int | None, where: str
) -> np.ndarray:
    """One document's tokens (EOS appended) as ``dtype``; StoreError naming ``where``."""
    try:
        ids = tokenize(text)
    except Exception as err:
        raise StoreError(
            f"{where}: the tokenizer raised {type(err).__name__}: {_first_line(err)}"
        ) from err
    ids = getattr(ids, "ids", ids)  # a Hugging Face Encoding
    try:
        doc = np.asarray(ids)
    except Exception:  # ragged nesting, objects numpy refuses
        doc = np.asarray(None)
    if doc.ndim != 1 or (doc.size and doc.dtype.kind not in "iu"):
        got = f"{type(ids).__name__} {str(ids)[:40]}"
        raise StoreError(
            f"{where}: the tokenizer returned {got}, expected a list of integer token ids"
        )
    limit = np.iinfo(dtype).max
    if doc.size and (int(doc.min()) < 0 or int(doc.max()) > limit):
        bad = int(doc[(doc < 0) | (doc > limit)][0])
        raise StoreError(
            f"{where}: token id {bad} does not fit {dtype} (ids 0..{limit}); pass the "
            f"tokenizer's --vocab-size"
        )
    if eos_id is not None:
        doc = np.append(doc.astype(np.int64), eos_id)
    return doc.astype(dtype)


def _part_records(
    path: str,
    start: int,
    size: int,
    first: int,
    field: str,
    tokenizer: str,
    dtype: str,
    eos_id: int | None,
) -> Iterator[dict[str, Any]]:
    """The records of one part: run in a pool worker, which loads the tokenizer by name."""
    tokenize = load_tokenizer(tokenizer)
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(size)
    lines = raw.decode("utf-8").split("\n")
    if lines and not lines[-1]:
        lines.pop()
    for number, line in enumerate(lines, first):
        text = _text(path, number, line, field)
        if text is not None:
            where = f"{path}:{number}"
            doc = document_tokens(text, tokenize, dtype=np.dtype(dtype), eos_id=eos_id, where=where)
            yield {COLUMN: doc}


def _text(path: str, number: int, line: str, field: str) -> str | None:
    if not line.strip():
        return None
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
    return text


def token_blocks(
    texts: Iterable[str],
    tokenize: Callable[[str], Any],
    *,
    dtype: np.dtype,
    eos_id: int | None,
    block_tokens: int = DEFAULT_BLOCK_TOKENS,
) -> Iterator[dict[str, Any]]:
    """Records of ``block_tokens`` tokens of the documents' stream (EOS after each).

    The layout of token stores before the list column (still read by ``epochal.tokens``);
    kept for building such stores in tests and for users who want fixed-size records.
    """
    block = np.zeros(block_tokens, dtype=dtype)
    fill = 0
    for number, text in enumerate(texts):
        where = f"document {number}"
        doc = document_tokens(text, tokenize, dtype=dtype, eos_id=eos_id, where=where)
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
) -> Ingest:
    """A JSONL file's documents as token records, in parts for a pool, with the metadata."""
    if not src.endswith((".jsonl", ".ndjson")):
        raise StoreError(f"--tokenizer builds from a .jsonl file of texts, got {src!r}")
    tokenize = load_tokenizer(tokenizer)
    vocab = vocab_size if vocab_size is not None else vocab_of(tokenize)
    if vocab is None:
        raise StoreError(
            f"cannot tell the vocabulary size of {tokenizer!r}: pass --vocab-size (it picks "
            f"uint16 or uint32 tokens)"
        )
    if eos_id is not None and not 0 <= eos_id < vocab:
        raise StoreError(f"--eos-id {eos_id} is outside the vocabulary [0, {vocab})")
    dtype = token_dtype(vocab)
    parts = [
        functools.partial(
            _part_records, src, start, size, first, field, tokenizer, dtype.str, eos_id
        )
        for start, size, first in line_ranges(src, _PART_BYTES)
    ]
    meta = {
        "tokens": {
            "eos_id": eos_id,
            "vocab_size": vocab,
            "dtype": dtype.name,
            "column": COLUMN,
            "tokenizer": tokenizer,
        }
    }
    return Ingest(
        records=(record for part in parts for record in part()),
        metadata=meta,
        parts=parts,
        columns=(Column(name=COLUMN, kind="list", dtype=dtype.str),),
    )
