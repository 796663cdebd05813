"""Weighted sampling: proportions, without-replacement permutations, resume, bad input.

Statistical tests use fixed seeds and a chi-square test at significance 0.001: with the
seeds fixed they are deterministic, and a sampler that drifted from its weights by a few
percent over these sample sizes would fail them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import epochal
from _budget import examples
from _roundtrip import json_roundtrip, run_save_load, stream
from epochal import Loader, StateError, WeightedSampler, balanced
from epochal.sampling import _GuideTable, uniform

ALPHA = 1e-3
WEIGHTS = [1.0, 2.0, 3.0, 4.0, 0.0, 10.0]


def _source(n: int):
    return epochal.from_arrays(y=np.arange(n, dtype=np.int64))


def _drawn(loader: Loader, epochs: int = 1) -> np.ndarray:
    return torch.cat([b["y"] for b in stream(loader, epochs)]).numpy()


def test_with_replacement_matches_the_weights():
    sampler = WeightedSampler(WEIGHTS, num_samples=20_000)
    drawn = _drawn(Loader(_source(6), 256, seed=3, sampler=sampler))
    counts = np.bincount(drawn, minlength=6)
    assert counts.sum() == 20_000
    assert counts[4] == 0, "a record of weight 0 was drawn"
    positive = np.array(WEIGHTS) > 0
    expected = np.array(WEIGHTS)[positive] / sum(WEIGHTS) * 20_000
    assert stats.chisquare(counts[positive], expected).pvalue > ALPHA


def test_with_replacement_is_a_function_of_seed_epoch_and_position():
    sampler = WeightedSampler(WEIGHTS, num_samples=50)
    a = sampler.order(seed=1, epoch=2).index(np.arange(50))
    assert np.array_equal(a, sampler.order(seed=1, epoch=2).index(np.arange(50)))
    assert np.array_equal(a[[7, 3]], sampler.order(seed=1, epoch=2).index([7, 3]))
    assert not np.array_equal(a, sampler.order(seed=1, epoch=3).index(np.arange(50)))
    assert not np.array_equal(a, sampler.order(seed=2, epoch=2).index(np.arange(50)))


def test_weighted_orders_are_pinned():
    """Part of the contract: changing the hash or the algorithm changes every weighted run."""
    sampler = WeightedSampler([1, 2, 3, 4], num_samples=8)
    assert sampler.order(seed=0, epoch=0).index(range(8)).tolist() == [1, 2, 2, 2, 3, 3, 1, 0]
    without = WeightedSampler([1, 2, 3, 4], replacement=False)
    assert without.order(seed=0, epoch=0).index(range(4)).tolist() == [2, 3, 1, 0]


def test_without_replacement_is_a_permutation_of_the_positive_records():
    weights = np.random.default_rng(0).random(1_000)
    weights[::7] = 0
    sampler = WeightedSampler(weights, replacement=False)
    assert len(sampler) == np.count_nonzero(weights)
    loader = Loader(_source(1_000), 64, seed=5, sampler=sampler)
    epochs = [torch.cat([b["y"] for b in loader]).tolist() for _ in range(3)]
    for drawn in epochs:
        assert sorted(drawn) == np.flatnonzero(weights).tolist()
    assert epochs[0] != epochs[1] != epochs[2], "every epoch has its own permutation"
    head = WeightedSampler(weights, replacement=False, num_samples=100)
    full = sampler.order(seed=1, epoch=4).index(np.arange(len(sampler)))
    assert np.array_equal(head.order(seed=1, epoch=4).index(np.arange(100)), full[:100])


def test_without_replacement_draws_in_proportion_to_weight():
    """Successive sampling: position 0 holds record i with probability w_i / sum(w),
    and position 1 holds j with probability E[w_j / (W - w_first)]."""
    sampler = WeightedSampler(WEIGHTS, replacement=False)
    firsts, seconds = Counter(), Counter()
    epochs = 4_000
    for epoch in range(epochs):
        first, second = sampler.order(seed=11, epoch=epoch).index([0, 1]).tolist()
        firsts[first] += 1
        seconds[second] += 1
    w = np.array(WEIGHTS)
    records = np.flatnonzero(w)
    observed = [firsts[i] for i in records]
    assert stats.chisquare(observed, w[records] / w.sum() * epochs).pvalue > ALPHA
    p_second = [
        sum(w[i] / w.sum() * w[j] / (w.sum() - w[i]) for i in records if i != j) for j in records
    ]
    observed = [seconds[j] for j in records]
    assert stats.chisquare(observed, np.array(p_second) * epochs).pvalue > ALPHA


def test_balanced_draws_every_class_equally():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    sampler = balanced(labels, num_samples=9_000)
    drawn = _drawn(Loader(_source(100), 100, seed=0, sampler=sampler))
    counts = np.bincount(labels[drawn], minlength=3)
    assert stats.chisquare(counts, [3_000, 3_000, 3_000]).pvalue > ALPHA


def test_balanced_reads_a_label_column_of_any_type():
    source = epochal.from_arrays(
        x=np.zeros((6, 2)), label=np.array(["cat", "cat", "cat", "dog", "dog", "eel"])
    )
    sampler = balanced(source, column="label")
    assert np.allclose(sampler.weights, [1 / 3] * 3 + [1 / 2] * 2 + [1.0])
    with pytest.raises(epochal.Error, match="no such column"):
        balanced(source, column="y")


@pytest.mark.parametrize("replacement", [True, False])
def test_save_and_resume_at_every_batch_equals_uninterrupted(replacement):
    weights = np.arange(23, dtype=np.float64) % 5
    sampler = WeightedSampler(weights, replacement=replacement)
    run_save_load(lambda: Loader(_source(23), 4, seed=7, sampler=sampler), epochs=3)


@pytest.mark.parametrize("replacement", [True, False])
def test_elastic_resume_neither_repeats_nor_skips_positions(replacement):
    sampler = WeightedSampler(np.arange(1, 41), replacement=replacement)
    reference = _drawn(Loader(_source(40), 6, seed=2, sampler=sampler))
    head = Loader(_source(40), 3, seed=2, sampler=sampler, rank=0, world_size=2)
    tail_parts = []
    for _batch in head:
        if head.position >= 12:
            break
    state = json_roundtrip(head.state_dict())
    for rank in range(3):
        tail = Loader(_source(40), 2, seed=2, sampler=sampler, rank=rank, world_size=3)
        tail.load_state_dict(state)
        tail_parts.append([b["y"] for b in tail])
    # rank slices of each global batch, in rank order, are the positions in order
    resumed = torch.cat([torch.cat(step) for step in zip(*tail_parts)]).numpy()
    assert np.array_equal(resumed, reference[12:])


def test_state_records_the_sampler_and_refuses_another():
    plain = Loader(_source(6), 2, seed=0)
    weighted = Loader(_source(6), 2, seed=0, sampler=WeightedSampler(WEIGHTS))
    state = weighted.state_dict()
    assert state["sampler"]["kind"] == "weighted"
    with pytest.raises(StateError, match="missing keys \\['sampler'\\]"):
        weighted.load_state_dict(plain.state_dict())
    with pytest.raises(StateError, match="unknown keys \\['sampler'\\]"):
        plain.load_state_dict(state)
    other = Loader(_source(6), 2, seed=0, sampler=WeightedSampler([1, 1, 1, 1, 1, 1]))
    with pytest.raises(StateError, match="sampler="):
        other.load_state_dict(state)
    without = Loader(_source(6), 2, seed=0, sampler=WeightedSampler(WEIGHTS, replacement=False))
    with pytest.raises(StateError, match="'replacement': True"):
        without.load_state_dict(state)


@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        ([1.0, -1.0], {}, "finite and >= 0, got weights\\[1\\] = -1.0"),
        ([0, 0, 0], {}, "positive sum, got all 3 weights zero"),
        ([1.0, float("nan")], {}, "finite and >= 0"),
        ([], {}, "non-empty 1-D"),
        (["a", "b"], {}, "must be numbers"),
        ([1, 0, 2], {"replacement": False, "num_samples": 3}, "in \\[1, 2\\]"),
        ([1, 2], {"num_samples": 0}, "an integer >= 1"),
    ],
)
def test_bad_weights_are_refused(weights, kwargs, message):
    with pytest.raises(epochal.Error, match=message):
        WeightedSampler(weights, **kwargs)


def test_a_sampler_for_another_length_is_refused():
    with pytest.raises(epochal.Error, match="indexes 6 records but the source has 5"):
        Loader(_source(5), 2, sampler=WeightedSampler(WEIGHTS))
    with pytest.raises(epochal.Error, match="non-empty 1-D sequence of labels"):
        balanced([])


@settings(max_examples=examples(100), deadline=None)
@given(
    st.lists(st.one_of(st.just(0.0), st.floats(1e-12, 1e6)), min_size=1, max_size=300).filter(
        lambda w: sum(w) > 0
    )
)
def test_guide_table_search_equals_binary_search(weights):
    cumulative = np.cumsum(weights)
    table = _GuideTable(cumulative)
    targets = uniform(7, np.arange(2_000)) * cumulative[-1]
    targets = np.concatenate([targets, cumulative[cumulative > 0]])
    assert np.array_equal(table.search(targets), np.searchsorted(cumulative, targets))


def test_balanced_reads_labels_from_a_source_without_columns():
    class Records:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"label": "ab"[i > 0]}

    assert balanced(Records(), column="label").weights.tolist() == [1.0, 1 / 3, 1 / 3, 1 / 3]
    with pytest.raises(epochal.Error, match="has \\['label'\\]"):
        balanced(Records(), column="y")
