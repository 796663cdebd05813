"""``epochal build --tokenizer``: JSONL text into a token store that epochal.tokens reads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import epochal
from epochal import Loader
from epochal.cli import main
from epochal.store._tokenize import token_blocks, token_dtype

_TEXTS = ["hello world", "épochal ✓", "", "a" * 300, "the last document"]


def _jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return str(path)


def _expected(texts, eos=256):
    return np.array([b for t in texts for b in [*t.encode(), eos]], dtype=np.int64)


def test_build_from_jsonl_with_a_byte_tokenizer(tmp_path):
    src = _jsonl(tmp_path / "c.jsonl", _TEXTS)
    dest = str(tmp_path / "store")
    args = ["--tokenizer", "_byte_tokenizer:encode", "--eos-id", "256", "--block-tokens", "64"]
    assert main(["build", src, dest, *args]) == 0
    store = epochal.open(dest)
    meta = store.metadata["tokens"]
    assert meta["eos_id"] == 256 and meta["dtype"] == "uint16" and meta["vocab_size"] == 257
    stream = _expected(_TEXTS)
    assert len(store) == -(-len(stream) // 64)  # blocks of 64 tokens, the last one padded
    src8 = epochal.tokens(store, 8, boundaries=True)  # eos_id comes from the manifest
    assert src8.eos_id == 256 and src8.num_tokens == len(stream)
    view = src8.for_epoch(1, seed=3)
    windows = view.get_columns(np.arange(len(view)))["tokens"]
    assert windows.dtype == np.uint16
    starts = view.offset + np.arange(len(view)) * 8
    assert np.array_equal(windows, stream[starts[:, None] + np.arange(9)])
    # the same windows as the flat stream in memory, through a Loader with resume state
    flat = epochal.tokens(stream.astype(np.uint16), 8, eos_id=256, boundaries=True)
    a, b = Loader(src8, 4, seed=3), Loader(flat, 4, seed=3)
    for x, y in zip(a, b):
        assert all(np.array_equal(x[k], y[k]) for k in x)


def test_a_large_vocabulary_gives_uint32_tokens(tmp_path):
    src = _jsonl(tmp_path / "c.jsonl", ["abc", "de"])
    dest = str(tmp_path / "store")
    args = ["build", src, dest, "--tokenizer", "_byte_tokenizer:wide", "--vocab-size", "70256"]
    assert main(args) == 0
    tokens = epochal.tokens(epochal.open(dest), 2)
    assert tokens.for_epoch(0).get_columns(np.arange(1))["tokens"].dtype == np.uint32
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tokenizer", "_byte_tokenizer:nope"], "has no attribute"),
        (["--tokenizer", "no_such_module_x:f"], "cannot import"),
        (["--tokenizer", "justaname"], "package.module:function"),
        (["--tokenizer", "_byte_tokenizer:wide"], "--vocab-size"),
        (["--tokenizer", "_byte_tokenizer:encode", "--text-field", "body"], "--text-field"),
        (["--tokenizer", "_byte_tokenizer:encode", "--eos-id", "300"], "--eos-id 300"),
    ],
)
def test_build_errors_are_one_line(tmp_path, capsys, extra, message):
    src = _jsonl(tmp_path / "c.jsonl", ["abc"])
    assert main(["build", src, str(tmp_path / "s"), *extra]) == 1  # an epochal.Error
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("epochal build: error: "), errors
    assert message in errors[0]


@pytest.mark.slow
def test_a_real_process_prints_no_traceback(tmp_path):
    src = _jsonl(tmp_path / "c.jsonl", ["abc"])
    result = subprocess.run(
        [sys.executable, "-m", "epochal", "build", src, str(tmp_path / "s"), "--tokenizer", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("epochal build: error: --tokenizer")


@given(
    docs=st.lists(st.lists(st.integers(0, 255), max_size=40), min_size=1, max_size=20),
    block=st.integers(1, 50),
)
@settings(max_examples=100, deadline=None)
def test_blocks_hold_the_stream_and_windows_read_across_them(docs, block):
    texts = [bytes(d).decode("latin-1") for d in docs]
    encode = lambda t: list(t.encode("latin-1"))  # noqa: E731
    blocks = list(
        token_blocks(texts, encode, dtype=np.dtype(np.uint16), eos_id=256, block_tokens=block)
    )
    stream = np.concatenate([b["tokens"][: b["length"]] for b in blocks])
    expected = np.array([x for d in docs for x in [*d, 256]], dtype=np.uint16)
    assert np.array_equal(stream, expected)
    assert all(b["length"] == block for b in blocks[:-1])
    if len(expected) < 3:
        return
    source = epochal.from_arrays(
        tokens=np.stack([b["tokens"] for b in blocks]),
        length=np.array([b["length"] for b in blocks]),
    )
    seq_len = max(1, min(len(expected) - 1, 7))
    via_blocks = epochal.tokens(source, seq_len).for_epoch(2, seed=1)
    flat = epochal.tokens(expected, seq_len).for_epoch(2, seed=1)
    idx = np.arange(len(flat))[::-1]
    assert np.array_equal(via_blocks.get_columns(idx)["tokens"], flat.get_columns(idx)["tokens"])
