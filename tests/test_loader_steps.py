"""Loader.steps(k): exactly k batches across epoch boundaries, resumable at any step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epochal
from _roundtrip import assert_streams_equal, run_save_load, stream
from epochal import Loader, WeightedSampler


def _source(n: int = 10):
    return epochal.from_arrays(y=np.arange(n, dtype=np.int64))


def test_steps_yield_exactly_k_batches_crossing_epochs():
    loader = Loader(_source(10), 4, seed=2)  # 3 batches per epoch: 4, 4, 2
    batches = list(loader.steps(8))
    assert len(batches) == 8
    assert_streams_equal(batches, list(stream(Loader(_source(10), 4, seed=2), 3))[:8])
    epochs = [torch.cat([b["y"] for b in batches[i : i + 3]]).tolist() for i in (0, 3)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(10))
    assert epochs[0] != epochs[1], "each epoch has its own order"
    assert (loader.epoch, loader.position) == (2, 8)


def test_steps_ending_on_an_epoch_boundary_continue_with_the_next_epoch():
    loader = Loader(_source(10), 5, seed=0)
    first = list(loader.steps(2))
    # the epoch rolled over when its last batch was delivered
    assert (loader.epoch, loader.position) == (1, 0)
    rest = list(loader.steps(2))
    assert (loader.epoch, loader.position) == (2, 0)
    assert_streams_equal(first + rest, list(stream(Loader(_source(10), 5, seed=0), 2)))
    assert list(loader.steps(0)) == []


@pytest.mark.parametrize("drop_last", [False, True])
def test_steps_resume_at_every_step(drop_last):
    run_save_load(lambda: Loader(_source(11), 3, seed=5, drop_last=drop_last), steps=14)


def test_steps_with_a_weighted_sampler_resume_at_every_step():
    sampler = WeightedSampler(np.arange(1, 12), num_samples=7)
    run_save_load(lambda: Loader(_source(11), 3, seed=5, sampler=sampler), steps=9)


def test_steps_with_workers_resume():
    run_save_load(
        lambda: Loader(_source(11), 3, seed=5, num_workers=2, transform=lambda r, rng: r),
        steps=10,
        cuts=[0, 4, 8],
    )


@pytest.mark.parametrize("k", [-1, 1.5, True, "3"])
def test_bad_step_counts_are_refused(k):
    with pytest.raises(epochal.Error, match="integer k >= 0"):
        Loader(_source(), 2).steps(k)
