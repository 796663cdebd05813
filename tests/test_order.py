"""Order: an exact, keyed, well-mixed bijection on [0, n) (P1, P2)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from _budget import examples
from _rounds import ROUNDS, rounds
from epochal.order import MAX_RECORDS, IdentityOrder, ShuffledOrder, make_order


def _is_permutation(values: np.ndarray, n: int) -> bool:
    return values.shape == (n,) and np.array_equal(np.sort(values), np.arange(n))


@pytest.mark.parametrize("way", ROUNDS)
def test_golden_order_is_part_of_the_contract(way):
    # The mapping below is part of epochal's contract: every shuffled run depends on it.
    # If this test fails, a change altered every user's data order; revert it.
    with rounds(way):
        assert ShuffledOrder(10, seed=0, epoch=0)[:].tolist() == [7, 0, 2, 3, 9, 5, 4, 1, 8, 6]
        assert ShuffledOrder(10, seed=0, epoch=1)[:].tolist() == [1, 4, 7, 6, 8, 3, 5, 2, 0, 9]
        big = ShuffledOrder(3_000_000, seed=5, epoch=7)
        assert big.index_range(1_000_000, 1_000_005).tolist() == GOLDEN_3M


# ShuffledOrder(3_000_000, seed=5, epoch=7) at positions 1,000,000..1,000,004: a size whose
# calls look their rounds up in tables by default (the small golden order above hashes them)
GOLDEN_3M = [2797655, 499628, 2653047, 500683, 2598279]


@settings(max_examples=examples(60), deadline=None)
@given(
    n=st.one_of(
        st.integers(1, 300_000),
        st.sampled_from([2**16, 2**16 + 1, 2**27 + 1, 2**28 - 1, 2**28]),
    ),
    seed=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 2**64 - 1),
    data=st.data(),
)
def test_round_tables_give_the_hashed_rounds_bits(n, seed, epoch, data):
    # the tables are a cache of the hash: index, position and index_range agree bit for bit
    order = ShuffledOrder(n, seed=seed, epoch=epoch)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    positions = rng.integers(0, n, size=data.draw(st.integers(0, 2000)), dtype=np.int64)
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, min(n, start + 3000)))
    results = {}
    for way in ROUNDS:
        with rounds(way):
            results[way] = (
                order.index(positions),
                order.position(positions),
                order.index_range(start, stop),
            )
    for hashed, looked_up in zip(results["hashed"], results["tables"]):
        assert looked_up.dtype == np.int64
        np.testing.assert_array_equal(looked_up, hashed)


def test_round_tables_where_a_half_fits_them():
    # 6 tables of 2**high_bits uint16 hashes up to n = 2**28 (halves of 14 bits), none above
    assert ShuffledOrder(2**28, seed=1, epoch=0).round_tables().shape == (6, 2**14)
    assert ShuffledOrder(2**28 + 1, seed=1, epoch=0).round_tables() is None
    tables = ShuffledOrder(1000, seed=1, epoch=0).round_tables()  # 10 bits: 5 + 5
    assert tables.shape == (6, 32) and tables.dtype == np.uint16 and tables.max() < 32


def test_small_calls_hash_and_large_calls_build_the_tables_once():
    order = ShuffledOrder(1_000_000, seed=2, epoch=3)  # halves of 10 bits: 6,144 hashes
    order.index(np.arange(100))
    assert order._tables is None  # a call smaller than the tables does not pay for them
    order.index_range(0, 10_000)
    tables = order._tables
    assert tables is not None
    order.index(np.arange(5))
    assert order._tables is tables
    copy = pickle.loads(pickle.dumps(order))  # a cache: never pickled, rebuilt where needed
    assert copy._tables is None
    np.testing.assert_array_equal(copy.index_range(0, 10_000), order.index_range(0, 10_000))


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1])
def test_exact_bijection_for_every_small_n(seed):
    for n in range(1, 2001):
        order = ShuffledOrder(n, seed=seed, epoch=n % 3)
        indices = order.index(np.arange(n))
        assert _is_permutation(indices, n), n
        assert np.array_equal(order.position(indices), np.arange(n)), n


@pytest.mark.parametrize("k", range(2, 23))
def test_exact_bijection_exhaustive_at_powers_of_two(k):
    # the boundaries where a Feistel shuffle without cycle walking (or with an off-by-one
    # in it) drops or repeats a record
    for n in (2**k - 1, 2**k, 2**k + 1):
        assert _is_permutation(ShuffledOrder(n, seed=k, epoch=1).index(np.arange(n)), n), n


@pytest.mark.parametrize("k", range(23, 49))
def test_bijection_by_sampling_up_to_2_48(k):
    # too large to enumerate: distinct positions must give distinct in-range indices, and
    # the inverse must give the positions back
    rng = np.random.default_rng(k)
    for n in (2**k - 1, 2**k, 2**k + 1):
        order = ShuffledOrder(n, seed=7, epoch=k)
        positions = np.unique(np.concatenate([rng.integers(0, n, 20_000), [0, 1, n - 2, n - 1]]))
        indices = order.index(positions)
        assert indices.min() >= 0 and indices.max() < n
        assert len(np.unique(indices)) == len(positions)
        assert np.array_equal(order.position(indices), positions)


def test_largest_supported_n():
    order = ShuffledOrder(MAX_RECORDS, seed=3, epoch=4)
    positions = np.array([0, 1, MAX_RECORDS - 1], dtype=np.int64)
    assert np.array_equal(order.position(order.index(positions)), positions)


@settings(max_examples=examples(200), deadline=None)
@given(
    n=st.integers(1, 5000),
    seed=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 2**20),
)
def test_bijection_property(n, seed, epoch):
    order = ShuffledOrder(n, seed=seed, epoch=epoch)
    assert _is_permutation(order.index(np.arange(n)), n)


def test_vectorised_matches_scalar_and_shapes():
    order = ShuffledOrder(1000, seed=5, epoch=2)
    positions = np.array([[3, 999], [0, 500]])
    indices = order.index(positions)
    assert indices.shape == (2, 2) and indices.dtype == np.int64
    assert [order[int(p)] for p in positions.ravel()] == indices.ravel().tolist()
    assert order[-1] == order[999]


def test_epochs_and_seeds_give_different_orders():
    n = 10_000
    base = ShuffledOrder(n, seed=0, epoch=0)[:]
    for other in (ShuffledOrder(n, seed=0, epoch=1), ShuffledOrder(n, seed=1, epoch=0)):
        # unrelated permutations agree on about one position
        assert np.count_nonzero(other[:] == base) < 10


def test_deterministic_across_instances():
    a = ShuffledOrder(12345, seed=99, epoch=3)[:]
    b = ShuffledOrder(12345, seed=99, epoch=3)[:]
    assert np.array_equal(a, b)


def test_position_of_each_record_is_uniform_across_seeds():
    """P1: any record can land at any position, with equal probability."""
    n, seeds = 16, 8000
    counts = np.zeros((n, n))
    for seed in range(seeds):
        order = ShuffledOrder(n, seed=seed, epoch=0)
        counts[np.arange(n), order.position(np.arange(n))] += 1
    expected = seeds / n
    stat = ((counts - expected) ** 2 / expected).sum()
    # each row is a multinomial over n cells: (n-1)^2 degrees of freedom for the table
    assert chi2.sf(stat, (n - 1) ** 2) > 1e-4, stat


def test_early_records_spread_over_the_whole_epoch():
    """P1: unlike a shuffle buffer, the first records of the source do not stay early."""
    n = 100_000
    positions = ShuffledOrder(n, seed=0, epoch=0).position(np.arange(n // 100))
    # the first 1% of the records, by position decile: ~10% in each
    deciles = np.bincount(positions * 10 // n, minlength=10) / len(positions)
    assert np.all(np.abs(deciles - 0.1) < 0.02), deciles
    # mean displacement of a uniformly random permutation is n/3
    displacement = np.abs(ShuffledOrder(n, seed=1, epoch=0)[:] - np.arange(n)).mean() / n
    assert abs(displacement - 1 / 3) < 0.01


def test_no_correlation_between_consecutive_epochs():
    n = 50_000
    for epoch in range(3):
        a = ShuffledOrder(n, seed=11, epoch=epoch).position(np.arange(n))
        b = ShuffledOrder(n, seed=11, epoch=epoch + 1).position(np.arange(n))
        r = np.corrcoef(a, b)[0, 1]
        assert abs(r) < 4 / np.sqrt(n), r  # ~4 standard errors of a zero correlation


def test_adjacent_records_do_not_stay_adjacent():
    n = 100_000
    positions = ShuffledOrder(n, seed=2, epoch=0).position(np.arange(n))
    gaps = np.abs(np.diff(positions))
    # in a random permutation two given records are within 10 positions with p ~ 20/n
    assert np.count_nonzero(gaps <= 10) < 50
    assert abs(gaps.mean() / n - 1 / 3) < 0.01


def test_identity_order():
    order = make_order(7, shuffle=False)
    assert isinstance(order, IdentityOrder)
    assert order[:].tolist() == list(range(7))
    assert order.position([3]).tolist() == [3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0, "seed": 0, "epoch": 0}, "1 <= n"),
        ({"n": MAX_RECORDS + 1, "seed": 0, "epoch": 0}, "1 <= n"),
        ({"n": 5, "seed": -1, "epoch": 0}, "seed"),
        ({"n": 5, "seed": 2**64, "epoch": 0}, "seed"),
        ({"n": 5, "seed": 0, "epoch": -1}, "epoch"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShuffledOrder(kwargs.pop("n"), **kwargs)


def test_out_of_range_positions_are_refused():
    order = ShuffledOrder(10, seed=0, epoch=0)
    with pytest.raises(IndexError, match="position 10 is out of range"):
        order.index([0, 10])
    with pytest.raises(TypeError, match="integers"):
        order.index(np.array([0.5]))
