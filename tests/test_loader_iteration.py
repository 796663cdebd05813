"""Loader iteration as frameworks drive it: len() is a full epoch, the epoch rolls over when
its last batch is delivered, evaluation loaders make every iter() a full pass, and the
topology is read when a pass is planned."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import epochal
from _roundtrip import json_roundtrip
from epochal import Loader


def _source(n: int = 20):
    return epochal.from_arrays(y=np.arange(n, dtype=np.int64))


def _ys(batches) -> list[int]:
    return [int(v) for b in batches for v in b["y"]]


def _framework_epochs(loader, epochs: int) -> list[list[int]]:
    """What Lightning does: per epoch, a new iter() and exactly len(loader) next() calls."""
    out = []
    for _ in range(epochs):
        it = iter(loader)
        out.append(_ys(next(it) for _ in range(len(loader))))
    return out


def test_len_is_a_full_epoch_and_batches_left_the_rest():
    loader = Loader(_source(10), 3)
    assert len(loader) == loader.batches_per_epoch == loader.batches_left == 4
    it = iter(loader)
    next(it)
    assert len(loader) == 4 and loader.batches_left == 3
    loader.set_epoch(5)
    assert loader.epoch == 5 and loader.position == 0 and loader.batches_left == 4


def test_epoch_rolls_over_when_its_last_batch_is_delivered():
    loader = Loader(_source(10), 5, seed=1)
    it = iter(loader)
    next(it)
    assert loader.epoch == 0 and loader.position == 5
    next(it)  # the last batch of epoch 0: the iterator is not exhausted yet
    assert loader.epoch == 1 and loader.position == 0
    assert loader.state_dict()["epoch"] == 1
    with pytest.raises(StopIteration):
        next(it)
    assert loader.epoch == 1  # asking for one more does not advance again


def test_a_framework_that_stops_after_len_batches_gets_every_epoch():
    """Issue 12 finding 1: Lightning never calls next() past len(); each epoch must still
    be a fresh, complete permutation, never an empty or a repeated one."""
    loader = Loader(_source(20), 3, seed=4)
    epochs = _framework_epochs(loader, 4)
    for e, ys in enumerate(epochs):
        assert sorted(ys) == list(range(20)), f"epoch {e} is not one full pass"
    reference = Loader(_source(20), 3, seed=4)
    assert epochs == [_ys(reference) for _ in range(4)]
    assert len({tuple(ys) for ys in epochs}) == 4, "each epoch has its own order"


def test_a_stale_iterator_whose_epoch_is_done_just_ends():
    loader = Loader(_source(6), 3)
    old = iter(loader)
    next(old), next(old)  # the whole epoch
    new = iter(loader)
    next(new)
    with pytest.raises(StopIteration):  # not "stale": it had nothing left to give
        next(old)


def test_an_old_end_of_epoch_state_starts_the_next_epoch():
    """A state with the position at the end of an epoch (as older versions saved it) means
    the next epoch is current."""
    loader = Loader(_source(10), 5, seed=2)
    state = {**loader.state_dict(), "epoch": 3, "position": 10}
    loader.load_state_dict(state)
    assert loader.epoch == 4 and loader.position == 0
    reference = Loader(_source(10), 5, seed=2)
    reference.set_epoch(4)
    assert _ys(loader) == _ys(reference)


def test_steps_with_resume_mid_epoch_keep_the_epoch_order():
    loader = Loader(_source(10), 3, seed=5)
    head = _ys(itertools.islice(iter(loader), 2))
    state = json_roundtrip(loader.state_dict())
    resumed = Loader(_source(10), 3, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == 4 and resumed.batches_left == 2
    assert head + _ys(resumed) == _ys(Loader(_source(10), 3, seed=5))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_full_pass_loaders_give_every_record_on_every_iter(num_workers):
    """Issue 12 finding 3: a sanity check of 2 batches and a peek must not eat data."""
    loader = Loader.eval(_source(20), 3, num_workers=num_workers, transform=lambda r, g: r)
    assert not loader.shuffle and loader.full_pass
    sanity = iter(loader)
    next(sanity), next(sanity)  # Lightning's sanity check stops after 2 batches
    next(iter(loader))  # a peek
    for _ in range(3):
        assert _ys(loader) == list(range(20))
    assert loader.epoch == 0 and loader.state_dict()["position"] == 0


def test_full_pass_over_ranks_covers_the_data_each_time():
    per_rank = [Loader.eval(_source(7), 2, rank=r, world_size=2, with_index=True) for r in (0, 1)]
    for _ in range(2):
        seen = []
        for loader in per_rank:
            for batch in loader:
                seen += batch["_index"][~batch["_repeat"]].tolist()
        assert sorted(seen) == list(range(7))


def test_shuffled_full_pass_keeps_its_epoch_until_set_epoch():
    loader = Loader(_source(20), 4, seed=3, full_pass=True)
    first = _ys(loader)
    assert _ys(loader) == first and sorted(first) == list(range(20))
    loader.set_epoch(1)
    assert _ys(loader) != first


def _fake_group(monkeypatch, rank: int, world_size: int) -> None:
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda: world_size)


def test_topology_is_read_when_a_pass_starts(monkeypatch):
    """Issue 12 finding 4: a Loader built before the process group exists (a
    LightningModule's __init__) must shard once the group is there."""
    loader = Loader(_source(20), 2, seed=0, with_index=True)
    assert (loader.rank, loader.world_size) == (0, 1)
    _fake_group(monkeypatch, 1, 2)
    assert len(loader) == 5 and (loader.rank, loader.world_size) == (1, 2)
    mine = [int(i) for b in loader for i in b["_index"]]
    other = Loader(_source(20), 2, seed=0, rank=0, world_size=2, with_index=True)
    theirs = [int(i) for b in other for i in b["_index"]]
    assert sorted(mine + theirs) == list(range(20)) and not set(mine) & set(theirs)
    assert loader.state_dict()["world_size"] == 2


def test_a_group_that_appears_mid_epoch_is_refused(monkeypatch):
    loader = Loader(_source(20), 2)
    next(iter(loader))
    _fake_group(monkeypatch, 0, 2)
    with pytest.raises(epochal.Error, match=r"rank 0 of world_size 1 .* rank 0 of 2"):
        iter(loader)


def test_a_group_that_appears_after_a_load_is_followed(monkeypatch):
    """The position counts samples over all ranks, so a loaded mid-epoch state is valid
    under any topology."""
    first = Loader(_source(20), 4, seed=1)
    next(iter(first))
    loader = Loader(_source(20), 2, seed=1)
    loader.load_state_dict(first.state_dict())
    _fake_group(monkeypatch, 1, 2)
    assert loader.batches_left == 4 and loader.world_size == 2


def test_explicit_topology_ignores_the_process_group(monkeypatch):
    loader = Loader(_source(20), 2, rank=0, world_size=1)
    _fake_group(monkeypatch, 1, 4)
    assert (loader.rank, loader.world_size) == (0, 1) and len(loader) == 10


def test_dataloader_like_attributes_for_frameworks():
    loader = Loader(_source(10), 2)
    assert loader.batch_sampler is None and loader.sampler is None
