"""Concats and mixtures of local stores read a batch in one gather over all their shards.

Each batch must equal the records read one by one, in batch order, whatever path the
concat takes (one address table over every store's shards; the per-source fallback for
variable-size columns), in this process, in a pickled copy and in a forked worker.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import epochal


def _records(lo: int, hi: int, *, text: bool = False):
    rng = np.random.default_rng(lo)
    for i in range(lo, hi):
        record = {
            "image": rng.integers(0, 255, (4, 3), dtype=np.uint8),
            "label": i,
            "weight": np.float32(i / 7),
            "flag": i % 3 == 0,
        }
        if text:
            record["name"] = f"r{i}"
        yield record


def _store(path, lo, hi, **kwargs):
    # small shards: every store has several, so a batch spans many pieces of memory
    epochal.write(_records(lo, hi, **kwargs), path, shard_size=150)
    return epochal.open(path)


def _expected(sources, indices):
    offsets = np.cumsum([0, *(len(s) for s in sources)])
    rows = []
    for i in indices.tolist():
        k = int(np.searchsorted(offsets, i, side="right")) - 1
        rows.append(sources[k][i - int(offsets[k])])
    return rows


def _check(concat, sources, indices):
    got = concat.get_columns(indices)
    expected = _expected(sources, indices)
    for name in expected[0]:
        column = [record[name] for record in expected]
        if isinstance(column[0], str):
            assert got[name] == column
        else:
            assert np.array_equal(got[name], np.stack(column)), name
            assert got[name].dtype == np.asarray(column[0]).dtype, name


def test_concat_of_stores_gathers_over_every_shard_at_once(tmp_path):
    sources = [_store(tmp_path / "a", 0, 50), _store(tmp_path / "b", 50, 80)]
    assert all(len(s.manifest.shards) > 2 for s in sources)
    joined = epochal.concat(*sources)
    assert joined._joined is not None
    indices = np.random.default_rng(0).integers(0, 80, 400)
    _check(joined, sources, indices)
    _check(joined, sources, indices[indices < 50])  # a batch from one source only
    # pickled after use: the copy maps its own shards and builds its own table
    copy = pickle.loads(pickle.dumps(joined))
    _check(copy, sources, indices)
    with pytest.raises(IndexError, match="record index 80 is out of range"):
        joined.get_columns(np.array([0, 80]))


def test_concat_of_an_array_source_and_a_store_takes_the_same_path(tmp_path):
    store = _store(tmp_path / "a", 0, 30)
    columns = store.get_columns(np.arange(30))
    arrays = epochal.from_arrays(**{name: np.ascontiguousarray(v) for name, v in columns.items()})
    joined = epochal.concat(arrays, store)
    assert joined._joined is not None
    _check(joined, [arrays, store], np.random.default_rng(1).integers(0, 60, 300))


def test_variable_size_columns_fall_back_to_per_source_reads(tmp_path):
    sources = [
        _store(tmp_path / "a", 0, 20, text=True),
        _store(tmp_path / "b", 20, 45, text=True),
    ]
    joined = epochal.concat(*sources)
    assert joined._joined is None
    _check(joined, sources, np.random.default_rng(2).integers(0, 45, 200))


def _child_gather(joined, indices, results):
    results.put({name: np.asarray(v) for name, v in joined.get_columns(indices).items()})


def test_a_forked_process_rebuilds_the_table_over_its_own_maps(tmp_path):
    import multiprocessing

    sources = [_store(tmp_path / "a", 0, 60), _store(tmp_path / "b", 60, 100)]
    joined = epochal.concat(*sources)
    indices = np.random.default_rng(4).integers(0, 100, 256)
    here = joined.get_columns(indices)  # the parent's table, before the fork
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child_gather, args=(joined, indices, results))
    child.start()
    there = results.get(timeout=60)
    child.join()
    assert child.exitcode == 0
    for name in here:
        assert np.array_equal(here[name], there[name])


def test_mixture_of_stores_delivers_every_record(tmp_path):
    sources = [_store(tmp_path / "a", 0, 60), _store(tmp_path / "b", 60, 100)]
    mixture = epochal.mix({sources[0]: 0.7, sources[1]: 0.3}, exhaustion="restart")
    assert mixture._joined is not None
    batches = list(epochal.Loader(mixture, 16, seed=3, with_index=True))
    for batch in batches:
        records = _expected(sources, batch["_index"].numpy())
        assert batch["label"].tolist() == [r["label"] for r in records]
    labels = torch.cat([b["label"] for b in batches])
    assert sorted(set(labels.tolist())) == list(range(100))
