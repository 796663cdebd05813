"""Source views: subset, split, concat (src/epochal/sources/_views.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import epochal
from _budget import examples
from _roundtrip import run_save_load
from epochal import Loader, StateError, concat, split, subset


def _source(n: int, offset: int = 0):
    return epochal.from_arrays(
        x=offset + np.arange(n, dtype=np.int64), name=np.array([f"r{offset + i}" for i in range(n)])
    )


class _Plain:
    """A source without batched paths: only __len__ and __getitem__."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"x": np.int64(100 + index), "name": f"p{index}"}


def test_subset_reads_the_parents_records_in_its_order():
    view = subset(_source(10), [7, 2, 2, 9])
    assert len(view) == 4
    assert view[0]["x"] == 7 and view[3]["name"] == "r9"
    columns = view.get_columns(np.array([3, 1]))
    assert columns["x"].tolist() == [9, 2]
    assert [r["x"] for r in view.get_many(np.array([0, 2]))] == [7, 2]
    assert view.deterministic and view.fast_gather
    with pytest.raises(IndexError, match="out of range for a subset of 4"):
        view[4]


def test_subset_of_a_plain_source_has_no_columnar_path_but_loads():
    view = subset(_Plain(5), [4, 0])
    assert view.get_columns is None and not view.batched
    batch = next(iter(Loader(view, 2, shuffle=False)))
    assert batch["x"].tolist() == [104, 100]


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([0, 10], "index 10 \\(at 1\\) is out of range for a source of 10 records; valid"),
        ([-1], "index -1 \\(at 0\\) is out of range"),
        ([], "non-empty 1-D"),
        ([[0, 1]], "non-empty 1-D"),
        ([0.5], "must be integers"),
    ],
)
def test_bad_subset_indices_are_refused(indices, message):
    with pytest.raises(epochal.Error, match=message):
        subset(_source(10), indices)


def test_subset_fingerprint_follows_parent_and_indices():
    parent = _source(10)
    assert subset(parent, [1, 2]).fingerprint == subset(parent, [1, 2]).fingerprint
    assert subset(parent, [1, 2]).fingerprint != subset(parent, [2, 1]).fingerprint
    state = Loader(subset(parent, [1, 2, 3]), 2).state_dict()
    with pytest.raises(StateError, match="fingerprint"):
        Loader(subset(parent, [1, 2, 4]), 2).load_state_dict(state)


def test_loader_over_a_subset_resumes_at_every_batch():
    view = subset(_source(40), np.arange(3, 40, 2))
    run_save_load(lambda: Loader(view, 3, seed=1), epochs=2)


@settings(max_examples=examples(60), deadline=None)
@given(
    n=st.integers(30, 500),  # every fraction is >= 1/30: no subset is empty
    fractions=st.lists(st.integers(1, 10), min_size=1, max_size=3),
    seed=st.integers(0, 2**64 - 1),
)
def test_split_is_a_partition_with_apportioned_sizes(n, fractions, seed):
    total = sum(fractions)
    fractions = [f / total for f in fractions]
    fractions[-1] = 1 - sum(fractions[:-1])
    parts = split(_source(n), fractions, seed=seed)
    members = np.concatenate([p.indices for p in parts])
    assert sorted(members.tolist()) == list(range(n))
    for part, fraction in zip(parts, fractions):
        assert abs(len(part) - fraction * n) < 1
        assert np.all(np.diff(part.indices) > 0), "members are listed in index order"


def test_split_membership_is_fixed_by_the_seed():
    """Part of the contract: a fixed seed keeps the same validation set forever."""
    train, val = split(_source(10), [0.7, 0.3], seed=0)
    assert val.indices.tolist() == [1, 6, 7]
    again = split(_source(10), [0.7, 0.3], seed=0)
    assert np.array_equal(again[0].indices, train.indices)
    other = split(_source(10), [0.7, 0.3], seed=1)
    assert not np.array_equal(other[1].indices, val.indices)


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ([0.5, 0.6], "must sum to 1"),
        ([1.2, -0.2], "finite numbers >= 0"),
        ([], "finite numbers >= 0"),
        ([0.99, 0.01], "subset 1 would be empty"),
    ],
)
def test_bad_splits_are_refused(fractions, message):
    with pytest.raises(epochal.Error, match=message):
        split(_source(10), fractions)


def test_concat_indexes_across_sources():
    both = concat(_source(3), _source(4, offset=100))
    assert len(both) == 7
    assert [both[i]["x"] for i in range(7)] == [0, 1, 2, 100, 101, 102, 103]
    indices = np.array([5, 0, 3, 2, 6])
    columns = both.get_columns(indices)
    assert columns["x"].tolist() == [102, 0, 100, 2, 103]
    assert columns["name"] == ["r102", "r0", "r100", "r2", "r103"]
    assert [r["x"] for r in both.get_many(indices)] == [102, 0, 100, 2, 103]
    which, local = both.locate(indices)
    assert which.tolist() == [1, 0, 1, 0, 1] and local.tolist() == [2, 0, 0, 2, 3]
    with pytest.raises(IndexError, match="out of range for a concat of 7"):
        both[7]


def test_loader_over_a_concat_sees_every_record_once_and_resumes():
    both = concat(_source(5), _source(6, offset=100), _Plain(4))
    assert both.get_columns is None, "one source without columns: records path"
    loader = Loader(both, 4, seed=3)
    seen = torch.cat([b["x"] for b in loader]).tolist()
    expected = [*range(5), *range(100, 106), *range(100, 104)]
    assert sorted(seen) == sorted(expected)
    run_save_load(lambda: Loader(concat(_source(5), _source(6, offset=100)), 4, seed=3))


def test_concat_of_different_columns_is_refused():
    other = epochal.from_arrays(x=np.zeros(3, dtype=np.float32), name=np.array(["a", "b", "c"]))
    with pytest.raises(epochal.Error, match="column 'x' of source 1 is float32"):
        concat(_source(3), other).get_columns(np.array([0, 4]))
    renamed = epochal.from_arrays(y=np.zeros(3, dtype=np.int64), name=np.array(["a", "b", "c"]))
    with pytest.raises(epochal.Error, match="same columns"):
        concat(_source(3), renamed).get_columns(np.array([0, 4]))
    with pytest.raises(epochal.Error, match="at least one source"):
        concat()


def test_concat_of_subsets_of_one_parent_reads_the_parent_in_one_gather():
    parent = _source(20)
    train, val = split(parent, [0.75, 0.25], seed=3)
    both = concat(val, train)
    assert both._flat is not None
    expected = [*val.indices.tolist(), *train.indices.tolist()]
    indices = np.array([0, 19, 5, 4])
    assert both.get_columns(indices)["x"].tolist() == [expected[i] for i in indices]
    assert [r["x"] for r in both.get_many(indices)] == [expected[i] for i in indices]
    assert [both[i]["x"] for i in range(20)] == expected
    mixed = epochal.mix({train: 3, val: 1})
    x = torch.cat([b["x"] for b in Loader(mixed, 8, seed=0)]).tolist()
    assert sorted(x) == list(range(20))


def test_concat_of_array_sources_gathers_in_one_pass_equal_to_the_fallback():
    import pickle

    rng = np.random.default_rng(0)
    parts = [
        epochal.from_arrays(
            x=rng.integers(0, 255, (n, 5, 3), dtype=np.uint8), y=np.arange(n) + 1000 * k
        )
        for k, n in enumerate([7, 1, 20])
    ]
    joined = epochal.concat(*parts)
    assert joined._joined is not None
    # a non-array part disables the one-pass gather: the fallback gives the reference
    fallback = epochal.concat(*parts[:2], epochal.subset(parts[2], np.arange(20)))
    assert fallback._joined is None
    indices = rng.integers(0, len(joined), 500)
    for source in (joined, pickle.loads(pickle.dumps(joined))):
        got, expected = source.get_columns(indices), fallback.get_columns(indices)
        assert got.keys() == expected.keys()
        for name in got:
            assert got[name].dtype == expected[name].dtype
            assert np.array_equal(got[name], expected[name])
    with pytest.raises(IndexError, match="record index 28 is out of range"):
        joined.get_columns(np.array([0, 28]))
    strided = epochal.from_arrays(x=np.zeros((6, 4))[:, ::2], y=np.arange(6))
    assert epochal.concat(parts[0], strided)._joined is None


@pytest.mark.parametrize("gap", [0, 15, 16, 1])
def test_joined_gather_by_rows_and_by_bytes_equals_per_source_reads(gap):
    """Sources a whole number of records apart are gathered as rows of one span (a take),
    others by byte address; both give each source's own records, in batch order."""
    rng = np.random.default_rng(gap)
    buffer = rng.integers(0, 255, 40 * 15 + gap, dtype=np.uint8)
    first = buffer[: 20 * 15].reshape(20, 5, 3)
    second = buffer[20 * 15 + gap :].reshape(20, 5, 3)
    sources = [
        epochal.from_arrays(x=first, y=np.arange(20)),
        epochal.from_arrays(x=second, y=np.arange(20) + 100),
    ]
    joined = epochal.concat(*sources)
    indices = rng.integers(0, 40, 300)
    got = joined.get_columns(indices)
    by_rows = {c.name: c.scale == 1 for c in joined._joined._columns}
    assert by_rows["x"] == (gap % 15 == 0)
    for name in ("x", "y"):
        expected = [sources[i // 20][i % 20][name] for i in indices.tolist()]
        assert np.array_equal(got[name], np.stack(expected))
    with pytest.raises(IndexError, match="record index -1 is out of range"):
        joined.get_columns(np.array([3, -1]))
    # pickled after use: the views over this process's memory stay behind
    pickled = pickle.dumps(joined)
    assert len(pickled) < 4_000
    again = pickle.loads(pickled).get_columns(indices)
    assert all(np.array_equal(again[name], got[name]) for name in got)
