"""List columns: variable-length 1-D numeric arrays per record (e.g. each document's tokens).

Written from plain records (numpy arrays with ``lists=``, or Python lists of numbers) and
from Arrow lists of varying length; read back as one numpy array per record, locally and
through the remote cache; checked like every other column kind (manifest, shard buffers,
verify).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import epochal
from _budget import examples
from epochal.store import CorruptStoreError, StoreError
from epochal.store._format import Manifest
from epochal.store._record_blocks import Blocks, from_arrow

_DTYPES = ["<u2", "<u4", "<i4", "<i8", "<f4", "<f8"]


def _docs(seed: int, n: int, dtype: str, max_len: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 1000, size=int(rng.integers(0, max_len))).astype(dtype) for _ in range(n)
    ]


def _assert_same(got: list[Any], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.ndim == 1
        np.testing.assert_array_equal(a, b)


@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 60),
    dtype=st.sampled_from(_DTYPES),
    shard_size=st.sampled_from([200, 1 << 20]),
)
@settings(max_examples=examples(15), deadline=None)
def test_round_trip_of_varying_lengths(tmp_path_factory, seed, n, dtype, shard_size):
    docs = _docs(seed, n, dtype)
    dest = tmp_path_factory.mktemp("lists") / "s"
    records = ({"doc": d, "id": i} for i, d in enumerate(docs))
    manifest = epochal.write(records, dest, lists=["doc"], shard_size=shard_size)
    assert manifest.columns[0].describe() == f"list[{dtype}]" and manifest.version == 3
    store = epochal.open(dest, verify=True)  # checksums and every value
    order = np.random.default_rng(seed).permutation(n)
    cols = store.get_columns(order)
    _assert_same(cols["doc"], [docs[i] for i in order])
    np.testing.assert_array_equal(cols["id"], order)
    _assert_same([store[int(i)]["doc"] for i in order[:5]], [docs[i] for i in order[:5]])
    assert store.get_columns(np.zeros(0, dtype=np.int64))["doc"] == []


def test_arrow_lists_of_varying_length_write_the_same_store_as_records(tmp_path):
    docs = _docs(1, 200, "<i4")
    by_rows = epochal.write(
        ({"doc": d} for d in docs), tmp_path / "rows", lists=["doc"], shard_size=700
    )
    table = pa.table({"doc": pa.array([d.tolist() for d in docs], type=pa.list_(pa.int32()))})
    blocks = Blocks([from_arrow(table.slice(0, 77)), from_arrow(table.slice(77))])
    by_arrow = epochal.write(blocks, tmp_path / "arrow", shard_size=700)
    assert by_arrow.fingerprint == by_rows.fingerprint and len(by_rows.shards) > 1
    _assert_same(epochal.open(tmp_path / "arrow").get_columns(np.arange(200))["doc"], docs)


def test_python_lists_of_numbers_are_list_columns(tmp_path):
    with pytest.raises(StoreError, match="first value needs at least one"):
        epochal.write([{"ints": []}], tmp_path / "empty")
    records = [{"ints": [1, 2, 3][: i % 4], "floats": [0.5] * (i + 1)} for i in range(6)]
    records[0]["ints"] = [7]  # the first value fixes the dtype: it needs an element
    epochal.write(records, tmp_path / "s")
    cols = epochal.open(tmp_path / "s").get_columns(np.arange(6))
    assert [c.dtype for c in cols["ints"]] == [np.int64] * 6
    assert [c.tolist() for c in cols["ints"]] == [[7], [1], [1, 2], [1, 2, 3], [], [1]]
    assert [c.dtype for c in cols["floats"]] == [np.float64] * 6
    assert [len(c) for c in cols["floats"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("later", "message"),
    [
        (np.zeros((2, 2), dtype=np.uint16), r"expects list\[<u2\]"),
        (["a", "b"], r"expects list\[<u2\]"),
        ([True, False], r"expects list\[<u2\]"),
        (np.array([1.5]), r"expects list\[<u2\]"),
        (np.array([70_000]), "70000 does not fit"),
        ([-1], "-1 does not fit"),
        (5, r"expects list\[<u2\]"),
    ],
)
def test_values_that_do_not_fit_name_the_record(tmp_path, later, message):
    records = [{"t": np.array([1, 2], dtype=np.uint16)}, {"t": later}]
    with pytest.raises(StoreError, match=f"record 1: column 't'.*{message}|{message}"):
        epochal.write(records, tmp_path / "s", lists=["t"])


def test_without_lists_a_numpy_array_still_fixes_its_shape(tmp_path):
    records = [{"t": np.arange(3)}, {"t": np.arange(4)}]
    with pytest.raises(StoreError, match=r"record 1: column 't' expects array\[<i8, \[3\]\]"):
        epochal.write(records, tmp_path / "s")


def _manifest(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    epochal.write([{"t": np.arange(3, dtype=np.uint16)}], tmp_path / "s", lists=["t"])
    path = tmp_path / "s" / "manifest.json"
    return path, json.loads(path.read_text())


def test_stores_without_list_columns_stay_version_2(tmp_path):
    assert epochal.write([{"a": 1}], tmp_path / "a").version == 2
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["version"] == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(version=2), "need format version 3"),
        (lambda m: m["columns"][0].update(dtype="|b1"), "list columns hold int, uint or float"),
        (lambda m: m["columns"][0].update(shape=[3]), "cannot have a shape"),
    ],
)
def test_manifest_list_entries_are_checked(tmp_path, edit, message):
    _, body = _manifest(tmp_path)
    edit(body)
    with pytest.raises(CorruptStoreError, match=message):
        Manifest.from_bytes(json.dumps(body).encode(), where="m")


def test_a_damaged_offsets_buffer_is_an_error_naming_the_shard(tmp_path):
    lengths = [i % 5 for i in range(50)]
    records = ({"t": np.arange(n, dtype=np.uint16)} for n in lengths)
    epochal.write(records, tmp_path / "s", lists=["t"])
    (shard,) = (tmp_path / "s" / "shards").glob("*.arrow")
    raw = bytearray(shard.read_bytes())
    # the offsets buffer, found by its content: 51 int64 offsets of those lengths
    pos = bytes(raw).index(np.concatenate([[0], np.cumsum(lengths)]).astype("<i8").tobytes())
    raw[pos + 8 * 20 : pos + 8 * 21] = np.int64(10**6).tobytes()  # far past the data
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=f"shards/{shard.name}"):
        epochal.open(tmp_path / "s").get_columns(np.arange(50))


def test_remote_reads_of_list_columns(s3, tmp_path):
    docs = _docs(3, 300, "<u2", max_len=200)
    url = f"s3://epochal-test/{uuid.uuid4().hex[:10]}"
    epochal.write(
        ({"t": d, "i": k} for k, d in enumerate(docs)),
        url,
        lists=["t"],
        shard_size=16 << 10,
        storage_options=s3["options"],
    )
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    order = np.random.default_rng(0).permutation(300)
    _assert_same(store.get_columns(order)["t"], [docs[i] for i in order])
    store.verify()
    tokens = epochal.tokens(store, 8, column="t")
    assert tokens.num_tokens == sum(len(d) for d in docs)


@pytest.mark.parametrize("transform", [None, lambda record, rng: record])
def test_a_loader_batch_holds_a_list_of_arrays(tmp_path, transform):
    docs = [np.arange(i % 4, dtype=np.uint16) + i for i in range(12)]
    epochal.write(({"t": d, "i": i} for i, d in enumerate(docs)), tmp_path / "s", lists=["t"])
    loader = epochal.Loader(epochal.open(tmp_path / "s"), 4, shuffle=False, transform=transform)
    batches = list(loader)
    assert [b["i"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    got = [t for b in batches for t in b["t"]]  # batches hold tensors: one per record
    assert all(isinstance(t, torch.Tensor) for t in got)
    _assert_same([t.numpy() for t in got], docs)
