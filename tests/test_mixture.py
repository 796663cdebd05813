"""Mixtures: proportions per batch, exhaustion policies, exact and elastic resume, bad input."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import epochal
from _budget import examples
from _roundtrip import json_roundtrip, run_save_load
from epochal import Loader, StateError, mix
from epochal.mixture import MAX_PERIOD, rational_proportions, schedule


def _source(n: int, tag: int):
    """Records whose ``x`` says where they came from: tag * 1000 + local index."""
    return epochal.from_arrays(
        x=tag * 1000 + np.arange(n, dtype=np.int64), pixels=np.ones((n, 2, 2), dtype=np.uint8)
    )


def test_golden_mixture_order_is_part_of_the_contract():
    # The mappings below are part of epochal's contract, like the plain order's: every
    # mixture run depends on the schedule, the sources' keys (_keys.mixture_keys) and
    # their cycles. If this test fails, a change altered every user's mixture; revert it.
    a, b = epochal.from_arrays(x=np.arange(5)), epochal.from_arrays(x=np.arange(100, 103))
    stop, restart = mix({a: 0.5, b: 0.5}), mix({a: 0.5, b: 0.5}, exhaustion="restart")
    for sampler, golden in (
        (stop.sampler, [[4, 7, 2, 6, 3, 5, 0], [4, 6, 1, 7, 2, 5, 3], [2, 6, 3, 7, 4, 5, 0]]),
        (
            restart.sampler,  # source b (3 records) starts a second, reshuffled cycle
            [[4, 7, 2, 6, 3, 5, 0, 7, 1], [4, 6, 1, 7, 2, 5, 3, 7, 0], [2, 6, 3, 7, 4, 5, 0, 6, 1]],
        ),
    ):
        positions = np.arange(len(sampler))
        for (seed, epoch), indices in zip(((0, 0), (0, 1), (2**64 - 1, 5)), golden):
            assert sampler.order(seed=seed, epoch=epoch).index(positions).tolist() == indices
    no_shuffle = restart.sampler.order(seed=0, epoch=0, shuffle=False)
    assert no_shuffle.index(np.arange(9)).tolist() == [0, 5, 1, 6, 2, 7, 3, 5, 4]
    loader = Loader(mix({a: 0.7, b: 0.3}), 3, seed=3)
    assert [batch["x"].tolist() for batch in loader] == [[3, 102, 2], [0, 4, 101], [1]]


def _three():
    return mix({_source(50, 0): 0.5, _source(40, 1): 0.3, _source(30, 2): 0.2})


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_schedule_keeps_every_prefix_within_one_of_its_quota(counts):
    """Tijdeman's bound |N_i(P) - w_i P| <= 1 - 1/(2k-2), checked in exact integers."""
    period, k = sum(counts), len(counts)
    table = schedule(counts, period)
    prefix = np.cumsum(np.eye(k, dtype=np.int64)[table], axis=0)  # N_i(P) for P = 1..D
    assert prefix[-1].tolist() == counts
    if k > 1:
        P = np.arange(1, period + 1)[:, None]
        deviation = np.abs(prefix * period - np.array(counts) * P)  # = D |N_i - w_i P|
        assert (deviation * (2 * k - 2) <= (2 * k - 3) * period).all()


def test_proportions_are_made_rational():
    assert rational_proportions([0.7, 0.3]) == ([7, 3], 10)
    assert rational_proportions([2, 1, 1]) == ([2, 1, 1], 4)
    assert rational_proportions([1 / 3, 2 / 3]) == ([1, 2], 3)
    counts, period = rational_proportions([np.pi, 1.0])
    assert period == MAX_PERIOD and sum(counts) == period
    assert abs(counts[0] / period - np.pi / (np.pi + 1)) < 1 / MAX_PERIOD


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 20), (2, 10), (4, 5)])
def test_every_global_batch_has_exact_proportions(world_size, batch_size):
    """0.7/0.3 with a global batch of 20: exactly 14 and 6 per global batch, 7 and 3 per
    rank slice of 10; the last partial batch is within one of its quota."""
    mixture = mix({_source(300, 0): 0.7, _source(100, 1): 0.3})
    per_rank = [
        list(Loader(mixture, batch_size, rank=r, world_size=world_size, seed=4, drop_last=True))
        for r in range(world_size)
    ]
    assert len(per_rank[0]) == len(mixture.sampler) // 20
    for batches in zip(*per_rank):
        tags = torch.cat([b["x"] // 1000 for b in batches])
        assert tags.bincount(minlength=2).tolist() == [14, 6]
        if world_size == 2:
            for b in batches:
                assert (b["x"] // 1000).bincount(minlength=2).tolist() == [7, 3]


def test_proportions_match_over_the_epoch_and_every_batch():
    """Chi-square over the whole epoch, and every batch of 32 within 2 of its quota."""
    mixture = _three()
    loader = Loader(mixture, 32, seed=1)
    batches = [b["x"] // 1000 for b in loader]
    counts = torch.cat(batches).bincount(minlength=3).numpy()
    expected = np.array([0.5, 0.3, 0.2]) * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 0.99
    for tags in batches[:-1]:
        assert (np.abs(tags.bincount(minlength=3).numpy() - np.array([16, 9.6, 6.4])) < 2).all()


def test_stop_ends_the_epoch_before_any_record_repeats():
    mixture = _three()
    # the 50 records of source 0 at 0.5 last for 100 positions, the others for longer
    assert mixture.sampler.exhaustion == "stop"
    x = torch.cat([b["x"] for b in Loader(mixture, 7, seed=3)]).numpy()
    assert len(x) == len(mixture.sampler) == 100 and len(set(x.tolist())) == len(x)
    assert sorted(x[x // 1000 == 0] % 1000) == list(range(50)), "source 0 is used up exactly"
    second = torch.cat([b["x"] for b in Loader(mixture, 7, seed=3, shuffle=True)]).numpy()
    assert np.array_equal(x, second)


def test_restart_reshuffles_sources_that_run_out_until_all_are_done():
    mixture = mix({_source(10, 0): 1, _source(100, 1): 1}, exhaustion="restart")
    x = torch.cat([b["x"] for b in Loader(mixture, 16, seed=0)]).numpy()
    small = x[x // 1000 == 0] % 1000
    big = x[x // 1000 == 1] % 1000
    assert sorted(big.tolist()) == list(range(100)), "every record of the big source, once"
    assert len(small) == 100 and np.bincount(small).tolist() == [10] * 10
    cycles = small.reshape(10, 10)
    assert all(sorted(c) == list(range(10)) for c in cycles.tolist()), "each cycle is a pass"
    assert len({tuple(c) for c in cycles.tolist()}) > 1, "each cycle has its own shuffle"


def test_samples_per_epoch_and_no_shuffle():
    mixture = mix({_source(4, 0): 1, _source(4, 1): 1}, exhaustion="restart", samples_per_epoch=12)
    x = torch.cat([b["x"] for b in Loader(mixture, 5, shuffle=False)]).tolist()
    assert x == [0, 1000, 1, 1001, 2, 1002, 3, 1003, 0, 1000, 1, 1001]


def test_locate_and_records_are_the_sources_records():
    a, b = _source(5, 0), _source(3, 1)
    mixture = mix({a: 2, b: 1})
    batch = next(iter(Loader(mixture, 6, seed=2, with_index=True)))
    which, local = mixture.locate(batch["_index"].numpy())
    assert np.array_equal(batch["x"].numpy(), which * 1000 + local)
    assert mixture[6]["x"] == 1001


@pytest.mark.parametrize("exhaustion", ["stop", "restart"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_save_and_resume_at_every_batch_equals_uninterrupted(exhaustion, num_workers):
    mixture = mix({_source(13, 0): 0.6, _source(7, 1): 0.4}, exhaustion=exhaustion)
    run_save_load(
        lambda: Loader(
            mixture,
            4,
            seed=9,
            num_workers=num_workers,
            transform=(lambda r, rng: r) if num_workers else None,
        ),
        epochs=2,
        cuts=None if num_workers == 0 else [0, 3, 5, 9],
    )


def _global_stream(make, world_size, batch_size, epochs, state=None, stop_at=None):
    """Record indices in position order (repeats dropped), from all ranks of one world."""
    loaders = [make(rank, world_size, batch_size) for rank in range(world_size)]
    if state is not None:
        for loader in loaders:
            loader.load_state_dict(state)
    out = []
    while loaders[0].epoch < epochs:
        # strict: every rank's pass runs to its end, so all of them move to the next epoch
        for batches in zip(*loaders, strict=True):
            for b in batches:
                out.extend(b["_index"][~b["_repeat"]].tolist())
            if stop_at is not None and loaders[0].position >= stop_at:
                return out, json_roundtrip(loaders[0].state_dict())
    return out, None


@pytest.mark.parametrize(("old", "new"), [(2, 3), (3, 1), (1, 4)])
def test_elastic_resume_of_a_mixture_neither_repeats_nor_skips(old, new):
    """P5: checkpoint on `old` ranks, resume on `new` ranks: the positions after the cut
    hold exactly the records of the uninterrupted run, in the same order."""
    mixture = mix({_source(61, 0): 0.5, _source(40, 1): 0.3, _source(33, 2): 0.2})

    def make(rank, world_size, batch_size):
        return Loader(
            mixture, batch_size, rank=rank, world_size=world_size, seed=8, with_index=True
        )

    reference, _ = _global_stream(make, old, 4, epochs=2)
    for stop_at in (8, 40, 96):
        head, state = _global_stream(make, old, 4, epochs=2, stop_at=stop_at)
        tail, _ = _global_stream(make, new, 3, epochs=2, state=state)
        assert head + tail == reference


def test_state_of_another_mixture_is_refused():
    a, b = _source(20, 0), _source(20, 1)
    state = Loader(mix({a: 0.5, b: 0.5}), 4).state_dict()
    assert state["sampler"] == {
        "kind": "mixture",
        "sizes": [20, 20],
        "counts": [1, 1],
        "period": 2,
        "exhaustion": "stop",
        "samples_per_epoch": 40,
    }
    with pytest.raises(StateError, match="'counts': \\[3, 1\\]"):
        Loader(mix({a: 0.75, b: 0.25}), 4).load_state_dict(state)
    with pytest.raises(StateError, match="'exhaustion': 'restart'"):
        Loader(mix({a: 0.5, b: 0.5}, exhaustion="restart"), 4).load_state_dict(state)


class _Empty:
    def __len__(self):
        return 0

    def __getitem__(self, index):
        raise IndexError(index)


@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        ("a", {}, "non-empty dict"),
        ({}, {}, "non-empty dict"),
        ({"a": -1.0, "b": 2.0}, {}, "weight of source 0 must be finite and >= 0, got -1.0"),
        ({"a": 0, "b": 0}, {}, "must sum to a positive number, got \\[0, 0\\]"),
        ({"a": 1.0, "b": 0.0}, {}, "weight of source 1 is 0"),
        ({"a": float("inf"), "b": 1.0}, {}, "finite"),
        ({"a": "x", "b": 1.0}, {}, "must be a number, got 'x'"),
        ({"a": 1e-9, "b": 1.0}, {}, "below 1/65536"),
        ({"a": 1, "b": 1}, {"exhaustion": "never"}, "exhaustion must be one of"),
        ({"a": 1, "b": 1}, {"samples_per_epoch": 10_000}, "in \\[1, 200\\] with exhaustion='stop'"),
        ({"a": 1, "b": 1}, {"samples_per_epoch": 0}, "in \\[1, 200\\]"),
        ({"a": 1, "b": 1}, {"samples_per_epoch": 1.5}, "must be an integer, got 1.5"),
    ],
)
def test_bad_mixtures_are_refused(weights, kwargs, message):
    sources = {"a": _source(100, 0), "b": _source(100, 1)}
    if isinstance(weights, dict):
        weights = {sources[k]: w for k, w in weights.items()}
    with pytest.raises(epochal.Error, match=message):
        mix(weights, **kwargs)


def test_empty_source_is_refused():
    with pytest.raises(epochal.Error, match="empty source"):
        mix({_source(3, 0): 1, _Empty(): 1})


def test_steps_over_a_mixture_cross_epochs_and_resume():
    mixture = mix({_source(9, 0): 2, _source(5, 1): 1}, exhaustion="restart")
    make = lambda: Loader(mixture, 4, seed=1)  # noqa: E731
    loader = make()
    assert len(list(loader.steps(11))) == 11 and loader.epoch >= 2
    run_save_load(make, steps=11)


def test_weights_are_ratios():
    a, b = _source(10, 0), _source(10, 1)
    assert mix({a: 7, b: 3}).sampler.state() == mix({a: 0.7, b: 0.3}).sampler.state()
    assert mix({a: 7, b: 3}).proportions == [0.7, 0.3]
    assert Fraction(mix({a: 1, b: 2}).proportions[0]).limit_denominator(10) == Fraction(1, 3)
