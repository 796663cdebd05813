"""``epochal build --tokenizer``: JSONL text into a token store that epochal.tokens reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import epochal
from _budget import examples
from _roundtrip import assert_streams_equal, run_save_load
from epochal import Loader
from epochal.cli import main
from epochal.store import _ingest, _tokenize
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
    args = ["--tokenizer", "_byte_tokenizer:encode", "--eos-id", "256"]
    assert main(["build", src, dest, *args]) == 0
    store = epochal.open(dest)
    meta = store.metadata["tokens"]
    assert meta["eos_id"] == 256 and meta["dtype"] == "uint16" and meta["vocab_size"] == 257
    # one record per document: its tokens, EOS appended, as a list column
    assert [c.describe() for c in store.columns] == ["list[<u2]"] and len(store) == len(_TEXTS)
    docs = store.get_columns(np.arange(len(_TEXTS)))["tokens"]
    assert [d.tolist() for d in docs] == [[*t.encode(), 256] for t in _TEXTS]
    stream = _expected(_TEXTS)
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
    for x, y in zip(a, b, strict=True):
        assert all(np.array_equal(x[k], y[k]) for k in x)


def test_workers_1_and_2_build_the_same_store(tmp_path, monkeypatch):
    texts = [f"document {i} " * (i % 9) for i in range(400)]
    src = _jsonl(tmp_path / "c.jsonl", texts)
    monkeypatch.setattr(_tokenize, "_PART_BYTES", 512)  # many parts: the pool runs
    assert len(list(_ingest.line_ranges(src, _tokenize._PART_BYTES))) > 10
    pids = tmp_path / "pids"
    monkeypatch.setenv("EPOCHAL_TEST_PIDS", str(pids))
    built = []
    for workers in (1, 2):
        dest = tmp_path / f"w{workers}"
        args = ["--tokenizer", "_byte_tokenizer:logged", "--eos-id", "256"]
        args += ["--workers", str(workers), "--shard-size-mb", "0.004"]
        assert main(["build", src, str(dest), *args]) == 0
        shards = sorted((dest / "shards").iterdir())
        built.append((epochal.open(dest).fingerprint, [f.read_bytes() for f in shards]))
    assert built[0] == built[1] and len(built[0][1]) > 1  # the same shards, byte for byte
    assert len(set(pids.read_text().split())) > 1  # and 2 workers did tokenize elsewhere
    store = epochal.open(tmp_path / "w2")
    got = store.get_columns(np.arange(len(texts)))["tokens"]
    assert [d.tolist() for d in got] == [[*t.encode(), 256] for t in texts]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("tokenizer", "words"),
    [
        ("fails_on_x", ":30: the tokenizer raised ValueError: cannot tokenize 'x29"),
        ("floats", ":1: the tokenizer returned list [24.0"),
        ("words", ":1: the tokenizer returned list ['0', '0'"),
        ("wide", ":1: token id 70048 does not fit uint16"),
    ],
)
def test_a_tokenizer_failing_on_a_document_is_one_line(
    tmp_path, capsys, monkeypatch, tokenizer, words, workers
):
    # "x" first appears in document 29 (line 30), in a later part than the first
    src = _jsonl(tmp_path / "c.jsonl", [f"{'x' if i == 29 else ''}{i} " * 3 for i in range(40)])
    monkeypatch.setattr(_tokenize, "_PART_BYTES", 64)
    argv = ["build", src, str(tmp_path / "s"), "--tokenizer", f"_byte_tokenizer:{tokenizer}"]
    assert main([*argv, "--vocab-size", "300", "--workers", str(workers)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("epochal build: error: "), err
    assert f"c.jsonl{words}" in err, err
    with pytest.raises(epochal.Error, match=r"not found|unfinished"):
        epochal.open(tmp_path / "s")  # no store was made


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
    # over 1 MiB of lines: the last one is in the second part, tokenized in a pool worker,
    # and the error travels back to the parent
    src = _jsonl(tmp_path / "c.jsonl", ["a" * 1000] * 1100 + ["x"])
    argv = ["build", src, str(tmp_path / "s"), "--tokenizer", "_byte_tokenizer:fails_on_x"]
    result = subprocess.run(
        [sys.executable, "-m", "epochal", *argv, "--vocab-size", "9", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "c.jsonl:1101: the tokenizer raised" in result.stderr


@given(
    docs=st.lists(st.lists(st.integers(0, 255), max_size=40), min_size=1, max_size=20),
    block=st.integers(1, 50),
)
@settings(max_examples=examples(100), deadline=None)
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


@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=40),
    seq_len=st.integers(1, 12),
    shard_size=st.sampled_from([40, 200, 1 << 20]),
    epoch=st.integers(0, 3),
)
@settings(max_examples=examples(20), deadline=None)
def test_tokens_over_a_store_column_equal_the_joined_stream_with_doc_offsets(
    tmp_path_factory, lengths, seq_len, shard_size, epoch
):
    rng = np.random.default_rng(sum(lengths) + seq_len)
    docs = [rng.integers(0, 50_000, size=n).astype(np.uint16) for n in lengths]
    total = sum(lengths)
    if total < seq_len + 1:
        return
    dest = tmp_path_factory.mktemp("tok") / "s"
    epochal.write(({"tokens": d} for d in docs), dest, lists=["tokens"], shard_size=shard_size)
    store = epochal.open(dest)
    flat = np.concatenate(docs)
    starts = np.cumsum([0, *lengths[:-1]])[np.array(lengths) > 0]  # empty documents: none
    a = epochal.tokens(store, seq_len, boundaries=True, straddle="drop")
    b = epochal.tokens(flat, seq_len, doc_offsets=starts, boundaries=True, straddle="drop")
    assert a.num_tokens == total and np.array_equal(a.doc_offsets, b.doc_offsets)
    assert a.fingerprint == b.fingerprint
    idx = np.random.default_rng(epoch).permutation(len(a))
    x, y = a.for_epoch(epoch, seed=5).get_columns(idx), b.for_epoch(epoch, seed=5).get_columns(idx)
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def test_store_column_windows_in_workers_and_after_resume(tmp_path):
    docs = [np.arange(i % 23 + 1, dtype=np.uint16) + i for i in range(300)]
    epochal.write(({"tokens": d} for d in docs), tmp_path / "s", lists=["tokens"], shard_size=999)
    src = epochal.tokens(epochal.open(tmp_path / "s"), 16, boundaries=True)
    # a transform puts the reads in worker processes: the source is pickled and remapped
    runs = [list(Loader(src, 8, seed=4, num_workers=w, transform=_keep)) for w in (0, 2)]
    assert_streams_equal(runs[0], runs[1])
    run_save_load(lambda: Loader(src, 8, seed=4), epochs=2, cuts=[0, 13, 29])


def _keep(record, rng):
    return record


def test_a_list_column_of_another_name_is_chosen_with_column(tmp_path):
    docs = [np.arange(5, dtype=np.uint16) + i for i in range(4)]
    epochal.write(({"t": d, "n": len(d)} for d in docs), tmp_path / "s", lists=["t"])
    store = epochal.open(tmp_path / "s")
    with pytest.raises(epochal.Error, match=r"list column 'tokens'.*pass column="):
        epochal.tokens(store, 4)
    src = epochal.tokens(store, 4, column="t")
    assert src.num_tokens == 20 and src.doc_offsets.tolist() == [0, 5, 10, 15]
    with pytest.raises(epochal.Error, match="gives the documents"):
        epochal.tokens(store, 4, column="t", doc_offsets=[0])
