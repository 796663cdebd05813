"""Plan: record-level sharding, equal batch counts per rank, and the last-batch policy (P3, P5)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _budget import examples
from epochal.plan import Plan


def _all_ranks(n, batch_size, world_size, drop_last, start=0):
    plans = [
        Plan(
            num_records=n,
            batch_size=batch_size,
            world_size=world_size,
            rank=r,
            drop_last=drop_last,
            start=start,
        )
        for r in range(world_size)
    ]
    return plans


def _check_pass(n, batch_size, world_size, drop_last, start=0):
    plans = _all_ranks(n, batch_size, world_size, drop_last, start)
    counts = {len(p) for p in plans}
    assert len(counts) == 1, "every rank must yield the same number of batches"
    num_batches = counts.pop()
    delivered: Counter[int] = Counter()
    repeats = 0
    for k in range(num_batches):
        for plan in plans:
            positions = plan.positions(k)
            assert len(positions) >= 1, "no rank may get an empty batch"
            assert len(positions) <= batch_size
            r = plan.repeats(k)
            repeats += r
            delivered.update(positions[: len(positions) - r].tolist())
            for p in positions[len(positions) - r :].tolist():
                # ranks are visited in order and repeats go to the highest ranks
                assert delivered[p] == 1, "a repeat must be a record of the epoch's last batch"
    assert all(c == 1 for c in delivered.values()), (
        "a record was delivered twice outside the repeats"
    )
    remaining = n - start
    G = batch_size * world_size
    if drop_last:
        assert sorted(delivered) == list(range(start, start + (remaining // G) * G))
        assert repeats == 0
    else:
        assert sorted(delivered) == list(range(start, n))
        partial = remaining % G
        assert repeats == (max(0, world_size - partial) if partial else 0)
        assert repeats == plans[0].total_repeats
    return num_batches


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 8, 64, 1024])
@pytest.mark.parametrize("batch_size", [1, 2, 5, 32])
@pytest.mark.parametrize("n", [1, 2, 9, 100, 1000, 4099])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_record_exactly_once_grid(n, batch_size, world_size, drop_last):
    if drop_last and n < batch_size * world_size:
        assert (
            len(Plan(num_records=n, batch_size=batch_size, world_size=world_size, drop_last=True))
            == 0
        )
        return
    _check_pass(n, batch_size, world_size, drop_last)


@settings(max_examples=examples(300), deadline=None)
@given(
    n=st.integers(1, 3000),
    batch_size=st.integers(1, 64),
    world_size=st.integers(1, 1024),
    drop_last=st.booleans(),
    start_fraction=st.floats(0, 1),
)
def test_every_record_exactly_once_from_any_start(
    n, batch_size, world_size, drop_last, start_fraction
):
    _check_pass(n, batch_size, world_size, drop_last, start=int(start_fraction * n))


def test_full_batches_are_contiguous_rank_slices():
    plans = _all_ranks(100, 4, 3, False)
    assert plans[0].positions(0).tolist() == [0, 1, 2, 3]
    assert plans[2].positions(1).tolist() == [20, 21, 22, 23]


def test_partial_batch_is_split_with_sizes_differing_by_at_most_one():
    # 100 = 8 * 12 + 4 records left for 3 ranks: sizes 2, 1, 1, no repeat
    plans = _all_ranks(100, 4, 3, False)
    last = len(plans[0]) - 1
    sizes = [len(p.positions(last)) for p in plans]
    assert sizes == [2, 1, 1]
    assert [p.repeats(last) for p in plans] == [0, 0, 0]


def test_fewer_records_than_ranks_repeats_the_fewest():
    # 2 records left for 4 ranks: 2 ranks take one repeat each
    plans = _all_ranks(10, 2, 4, False)
    last = len(plans[0]) - 1
    assert [p.positions(last).tolist() for p in plans] == [[8], [9], [8], [9]]
    assert [p.repeats(last) for p in plans] == [0, 0, 1, 1]
    assert plans[0].total_repeats == 2


def test_consumed_counts_samples_over_all_ranks():
    plan = Plan(num_records=10, batch_size=2, world_size=2, rank=1)
    assert [plan.consumed(k) for k in range(len(plan))] == [4, 8, 10]
    resumed = Plan(num_records=10, batch_size=3, world_size=1, start=8)
    assert len(resumed) == 1 and resumed.positions(0).tolist() == [8, 9]


def test_resume_with_another_world_size_is_seamless():
    """P5: the rest of the epoch after a resume on another world size is exactly the rest."""
    n, G = 1000, 24
    consumed = 5 * G
    remainder = set()
    for world_size in (2, 4, 8):
        plans = _all_ranks(n, G // world_size, world_size, False, start=consumed)
        got = np.concatenate([p.positions(k) for p in plans for k in range(len(p))])
        assert sorted(got.tolist()) == list(range(consumed, n))
        remainder.add(tuple(sorted(got.tolist())))
    assert len(remainder) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_records": 0, "batch_size": 1}, "num_records"),
        ({"num_records": 5, "batch_size": 0}, "batch_size"),
        ({"num_records": 5, "batch_size": 1, "world_size": 0}, "world_size"),
        ({"num_records": 5, "batch_size": 1, "world_size": 2, "rank": 2}, "rank"),
        ({"num_records": 5, "batch_size": 1, "start": 6}, "start"),
    ],
)
def test_bad_plans_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Plan(**kwargs)


def test_batch_out_of_range():
    with pytest.raises(IndexError, match="batch 3"):
        Plan(num_records=5, batch_size=2).positions(3)


@settings(max_examples=examples(200), deadline=None)
@given(
    n=st.integers(1, 3000),
    batch_size=st.integers(1, 64),
    world_size=st.integers(1, 64),
    start_fraction=st.floats(0, 1),
    data=st.data(),
)
def test_full_positions_match_positions(n, batch_size, world_size, start_fraction, data):
    rank = data.draw(st.integers(0, world_size - 1))
    plan = Plan(
        num_records=n,
        batch_size=batch_size,
        world_size=world_size,
        rank=rank,
        start=int(start_fraction * n),
    )
    rows = plan.full_positions(0, plan.full_batches)
    assert rows.shape == (plan.full_batches, batch_size)
    for k in range(plan.full_batches):
        assert rows[k].tolist() == plan.positions(k).tolist()
    assert all(plan.repeats(k) == 0 for k in range(plan.full_batches))
    with pytest.raises(IndexError, match="full batches"):
        plan.full_positions(0, plan.full_batches + 1)
