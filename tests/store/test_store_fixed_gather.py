"""The batch path of stores whose columns are all fixed-size (issue #18): once every shard
is mapped, ``get_columns`` gathers by address without the general path's per-batch work.
It must return exactly what the per-record reads return, check every index, own its
memory, and map its own shards after a fork."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import epochal
from _budget import examples


def _record(i: int) -> dict[str, object]:
    return {
        "image": np.full((2, 3), i % 251, dtype=np.uint8)
        + np.arange(6, dtype=np.uint8).reshape(2, 3),
        "label": i * 7 - 3,
        "flag": i % 3 == 0,
        "vec": np.array([i, -i, 0.5 * i], dtype=np.float32),
    }


def _check(store: epochal.StoreSource, picks: np.ndarray) -> None:
    cols = store.get_columns(picks)
    assert set(cols) == {"image", "label", "flag", "vec"}
    assert cols["image"].shape == (len(picks), 2, 3) and cols["image"].dtype == np.uint8
    assert cols["label"].dtype == np.int64 and cols["flag"].dtype == np.bool_
    assert cols["vec"].shape == (len(picks), 3) and cols["vec"].dtype == np.float32
    want = [_record(i) for i in picks.tolist()]
    for name in cols:
        expected = np.array([record[name] for record in want]).reshape(cols[name].shape)
        np.testing.assert_array_equal(cols[name], expected.astype(cols[name].dtype), err_msg=name)


@settings(max_examples=examples(8), deadline=None)
@given(
    n=st.integers(1, 80),
    shard_size=st.sampled_from([40, 200, 900, 1 << 30]),
    picks=st.lists(st.integers(0, 10**6), max_size=60),
)
def test_fixed_gather_equals_the_records_across_shards(tmp_path_factory, n, shard_size, picks):
    """Property: before and after every shard is mapped (the fast path), a batch is the
    records written, in batch order, with repeats, at any shard layout."""
    dest = tmp_path_factory.mktemp("fixed") / "s"
    epochal.write((_record(i) for i in range(n)), dest, shard_size=shard_size)
    store = epochal.open(dest)
    idx = np.array([p % n for p in picks], dtype=np.int64)
    _check(store, idx)  # maps only the shards these records are in
    _check(store, np.arange(n, dtype=np.int64))  # maps every shard: the fast path from now on
    assert store._fixed is not None
    _check(store, idx[::-1].copy())
    _check(store, np.array([], dtype=np.int64))


@pytest.mark.parametrize("shard_size", [300, 1 << 30], ids=["shards", "one-shard"])
def test_fixed_gather_checks_every_index_and_owns_its_memory(tmp_path, shard_size):
    epochal.write((_record(i) for i in range(50)), tmp_path / "s", shard_size=shard_size)
    store = epochal.open(tmp_path / "s")
    assert (len(store.manifest.shards) > 1) == (shard_size == 300)
    store.get_columns(np.arange(50))
    assert store._fixed is not None
    # the ends of int64 too: a negative index views as a huge unsigned one
    for bad in (50, 51, -1, -50, 2**62, 2**63 - 1, -(2**63)):
        with pytest.raises(IndexError, match=f"record index {bad} is out of range"):
            store.get_columns(np.array([0, bad, 3]))
        with pytest.raises(IndexError, match=f"record index {bad} is out of range"):
            store.get_columns(np.array([bad]))
    kept = store.get_columns(np.array([4, 5]))
    mapped = [r for shard in store._open.values() for v in shard.views for r in v.regions()]
    for col in kept.values():  # fresh memory: no byte of a batch lies in a shard's buffers
        lo, hi = col.ctypes.data, col.ctypes.data + col.nbytes
        assert col.flags.writeable and all(hi <= a or a + size <= lo for a, size in mapped)
    kept["image"][:] = 0  # a caller writing into its batch never changes the store
    kept["label"][:] = 0
    again = store.get_columns(np.array([4, 5]))
    assert not kept["image"].any() and not kept["label"].any()  # a later batch is elsewhere
    np.testing.assert_array_equal(again["image"][0], _record(4)["image"])
    assert again["label"].tolist() == [_record(4)["label"], _record(5)["label"]]


def _child_reads(store: epochal.StoreSource, queue: mp.Queue) -> None:
    inherited = store._fixed
    store.get_columns(np.arange(30))  # maps every shard here: the fast path again
    labels = store.get_columns(np.array([7, 1, 7]))["label"].tolist()
    queue.put((labels, store._fixed is not None and store._fixed is not inherited))


def test_fixed_gather_after_fork_maps_its_own_shards(tmp_path):
    epochal.write((_record(i) for i in range(30)), tmp_path / "s", shard_size=200)
    store = epochal.open(tmp_path / "s")
    store.get_columns(np.arange(30))
    parent_fixed = store._fixed
    assert parent_fixed is not None
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(store, queue))
    child.start()
    got, rebuilt = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert got == [_record(i)["label"] for i in (7, 1, 7)]
    assert rebuilt  # the child mapped the shards itself instead of reading the parent's
    assert store._fixed is parent_fixed  # the parent's maps are untouched
