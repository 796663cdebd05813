"""Round trips through write/open on local disk: every column type, one and many shards."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_records import assert_columns_equal, assert_record_equal, make_record

import epochal
from _budget import examples
from epochal.store import CorruptStoreError, StoreError


@pytest.mark.parametrize("shard_size", [1 << 30, 700], ids=["one-shard", "many-shards"])
def test_round_trip_every_column_type(tmp_path, shard_size):
    n = 60
    manifest = epochal.write(
        (make_record(i) for i in range(n)), tmp_path / "s", shard_size=shard_size
    )
    assert manifest.num_records == n
    assert (len(manifest.shards) == 1) == (shard_size > 1 << 20)
    store = epochal.open(tmp_path / "s")
    assert len(store) == n and store.deterministic is True
    assert store.fingerprint == manifest.fingerprint
    for i in range(n):
        assert_record_equal(store[i], make_record(i))
    indices = np.random.default_rng(0).permutation(n)[:37]
    assert_columns_equal(store.get_columns(indices), indices)
    for got, i in zip(store.get_many(indices), indices, strict=True):
        assert_record_equal(got, make_record(int(i)))


def test_get_columns_is_a_numpy_batch_for_fixed_columns(tmp_path):
    epochal.write((make_record(i) for i in range(10)), tmp_path / "s", shard_size=300)
    cols = epochal.open(tmp_path / "s").get_columns(np.array([9, 0, 9, 3]))
    assert cols["image"].shape == (4, 4, 5, 3) and cols["image"].dtype == np.uint8
    assert cols["label"].tolist() == [9, 0, 9, 3] and cols["label"].dtype == np.int64
    assert cols["flag"].dtype == np.bool_ and cols["flag"].tolist() == [True, True, True, True]
    assert isinstance(cols["raw"], list) and isinstance(cols["text"], list)
    assert epochal.open(tmp_path / "s").get_columns(np.array([], dtype=np.int64))[
        "image"
    ].shape == (0, 4, 5, 3)


@settings(max_examples=examples(25), deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    shard_size=st.integers(1, 2000),
    picks=st.lists(st.integers(0, 10**6), max_size=50),
)
def test_variable_size_gather_matches_python(tmp_path_factory, sizes, shard_size, picks):
    """Property: the offsets-buffer gather returns exactly the bytes written, across shards."""
    dest = tmp_path_factory.mktemp("var") / "s"
    blobs = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    epochal.write(({"b": b, "t": str(len(b))} for b in blobs), dest, shard_size=shard_size)
    store = epochal.open(dest)
    indices = np.array([p % len(blobs) for p in picks], dtype=np.int64)
    cols = store.get_columns(indices)
    assert cols["b"] == [blobs[i] for i in indices]
    assert cols["t"] == [str(len(blobs[i])) for i in indices]


def test_out_of_range_indices(tmp_path):
    epochal.write(({"x": i} for i in range(5)), tmp_path / "s")
    store = epochal.open(tmp_path / "s")
    for bad in (-1, 5):
        with pytest.raises(IndexError, match=str(bad)):
            store[bad]
        with pytest.raises(IndexError, match=str(bad)):
            store.get_columns(np.array([0, bad]))


def test_schema_errors_name_the_record_and_column(tmp_path):
    records = [{"x": np.zeros(3, np.uint8), "y": 1}, {"x": np.zeros(4, np.uint8), "y": 2}]
    with pytest.raises(
        StoreError,
        match=r"record 1: column 'x' expects array\[\|u1, \[3\]\].*got ndarray\[uint8, \[4\]\]",
    ):
        epochal.write(records, tmp_path / "a")
    with pytest.raises(StoreError, match=r"record 1: column 'y' expects scalar\[<i8\].*got str"):
        epochal.write([{"y": 1}, {"y": "2"}], tmp_path / "b")
    with pytest.raises(StoreError, match=r"record 2 has columns \['y', 'z'\], expected \['y'\]"):
        epochal.write([{"y": 1}, {"y": 2}, {"y": 3, "z": 4}], tmp_path / "c")
    with pytest.raises(StoreError, match=r"record 0: column 'y' has a value of type NoneType"):
        epochal.write([{"y": None}], tmp_path / "d")
    with pytest.raises(StoreError, match="no records"):
        epochal.write([], tmp_path / "e")
    # a float column accepts ints; an int column refuses floats
    epochal.write([{"f": 1.5}, {"f": 2}], tmp_path / "f")
    assert epochal.open(tmp_path / "f").get_columns(np.arange(2))["f"].tolist() == [1.5, 2.0]


def test_existing_store_needs_overwrite(tmp_path):
    epochal.write(({"x": i} for i in range(5)), tmp_path / "s", shard_size=10)
    with pytest.raises(StoreError, match="already holds a finished store"):
        epochal.write(({"x": i} for i in range(3)), tmp_path / "s")
    epochal.write(({"x": -i} for i in range(3)), tmp_path / "s", overwrite=True)
    store = epochal.open(tmp_path / "s")
    assert store.get_columns(np.arange(3))["x"].tolist() == [0, -1, -2]
    # the old store's extra shards are gone
    assert sorted(os.listdir(tmp_path / "s" / "shards")) == [s.name for s in store.manifest.shards]


def test_metadata_and_fingerprint(tmp_path):
    a = epochal.write(
        ({"x": i} for i in range(5)), tmp_path / "a", metadata={"classes": ["cat", "dog"]}
    )
    b = epochal.write(({"x": i} for i in range(5)), tmp_path / "b")
    c = epochal.write(({"x": i + 1} for i in range(5)), tmp_path / "c")
    assert epochal.open(tmp_path / "a").metadata["classes"] == ["cat", "dog"]
    assert a.fingerprint == b.fingerprint != c.fingerprint
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["format"] == "epochal-store" and manifest["num_records"] == 5


def test_shards_are_plain_arrow_files(tmp_path):
    import pyarrow as pa

    epochal.write((make_record(i) for i in range(8)), tmp_path / "s")
    table = pa.ipc.open_file(next((tmp_path / "s" / "shards").iterdir())).read_all()
    assert table.num_rows == 8 and table.column("label").to_pylist() == list(range(8))


def _parallel_partition(args):
    dest, i, k = args
    epochal.write(
        (make_record(j) for j in range(i * 10, i * 10 + 10)),
        dest,
        shard_size=500,
        partition=i,
        num_partitions=k,
    )


def test_parallel_build_by_partition_then_merge(tmp_path):
    dest = str(tmp_path / "s")
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_parallel_partition, [(dest, i, 3) for i in (2, 0)])
    with pytest.raises(StoreError, match=r"partitions \[1\] of 3 are not written yet"):
        epochal.merge(dest)
    with pytest.raises(StoreError, match="unfinished build"):
        epochal.open(dest)
    _parallel_partition((dest, 1, 3))
    manifest = epochal.merge(dest)
    store = epochal.open(dest)
    assert len(store) == manifest.num_records == 30
    for i in (0, 9, 10, 29):
        assert_record_equal(store[i], make_record(i))
    assert not (tmp_path / "s" / "_partitions").exists() or not os.listdir(
        tmp_path / "s" / "_partitions"
    )


def test_merge_refuses_disagreeing_partitions(tmp_path):
    epochal.write([{"x": 1}], tmp_path, partition=0, num_partitions=2)
    epochal.write([{"x": "one"}], tmp_path, partition=1, num_partitions=2)
    with pytest.raises(StoreError, match="partition 1 has columns"):
        epochal.merge(tmp_path)


def _read_in_child(store, queue):
    queue.put(store.get_columns(np.array([3, 41, 7]))["label"].tolist())


def test_fork_and_pickle_safe(tmp_path):
    epochal.write((make_record(i) for i in range(50)), tmp_path / "s", shard_size=800)
    store = epochal.open(tmp_path / "s")
    store[0]  # maps shard 0 in the parent before forking
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(store, queue))
    child.start()
    assert queue.get(timeout=30) == [3, 41, 7]
    child.join(timeout=30)
    clone = pickle.loads(pickle.dumps(store))
    assert clone._open == {} and clone.get_columns(np.array([41]))["label"].tolist() == [41]


def test_open_without_store(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        epochal.open(tmp_path / "nothing")
    assert issubclass(CorruptStoreError, StoreError) and issubclass(StoreError, epochal.Error)


def test_loader_reads_the_store_with_workers(tmp_path):
    pytest.importorskip("epochal.loader")
    n = 45
    epochal.write((make_record(i) for i in range(n)), tmp_path / "s", shard_size=700)
    loader = epochal.Loader(
        epochal.open(tmp_path / "s"), batch_size=8, num_workers=2, shuffle=True, seed=1
    )
    seen = []
    for batch in loader:
        labels = batch["label"].tolist()
        seen += labels
        for j, label in enumerate(labels):
            want = make_record(label)
            np.testing.assert_array_equal(np.asarray(batch["image"][j]), want["image"])
            assert batch["raw"][j] == want["raw"] and batch["text"][j] == want["text"]
    assert sorted(seen) == list(range(n))
