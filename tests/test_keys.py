"""The keys module: one hash, one seed rule, the derivations everything else draws from."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import epochal
from epochal import _keys
from epochal._errors import SeedError

u64 = st.integers(0, 2**64 - 1)


def test_splitmix64_is_pinned():
    # splitmix64 from state 0 (Vigna's reference sequence): every key of epochal derives
    # from this function, so its outputs are part of the contract
    assert _keys.splitmix64(0) == 0xE220A8397B1DCDAF
    assert _keys.splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


@given(st.lists(u64, min_size=1, max_size=50))
def test_vectorised_splitmix64_equals_the_scalar_one(values):
    array = np.array(values, dtype=np.uint64)
    assert _keys.splitmix64_array(array).tolist() == [_keys.splitmix64(v) for v in values]


@given(u64, st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=20))
def test_uniform_is_the_top_53_bits_of_the_hash_plus_one(key, counters):
    u = _keys.uniform(key, np.array(counters, dtype=np.int64))
    expected = [((_keys.splitmix64(key ^ c) >> 11) + 1) * 2.0**-53 for c in counters]
    assert u.tolist() == expected and (u > 0).all() and (u <= 1).all()


@pytest.mark.parametrize("seed", [0, 1, 2**32, 2**64 - 1, np.uint64(2**64 - 1), np.int8(3)])
def test_every_integer_in_range_is_a_seed(seed):
    assert _keys.check_seed(seed) == int(seed) and type(_keys.check_seed(seed)) is int


@pytest.mark.parametrize("seed", [-1, 2**64, 1.0, True, "0", None])
def test_one_seed_rule_everywhere(seed):
    """The same check, range and error for every seed epochal takes."""
    message = r"seed must be an integer in \[0, 2\*\*64\)"
    source = epochal.from_arrays(x=np.arange(4))
    calls = [
        lambda: _keys.check_seed(seed),
        lambda: epochal.Loader(source, 2, seed=seed),
        lambda: epochal.ShuffledOrder(4, seed=seed, epoch=0),
        lambda: epochal.sample_rng(seed, 0, 0),
        lambda: epochal.split(source, [0.5, 0.5], seed=seed),
        lambda: epochal.seed_everything(seed),
    ]
    for call in calls:
        with pytest.raises(SeedError, match=message):
            call()
    assert issubclass(SeedError, epochal.Error) and issubclass(SeedError, ValueError)


def test_consumers_of_one_seed_draw_unrelated_keys():
    seed, epoch = 7, 3
    keys = {
        _keys.sample_key(seed, epoch),
        _keys.weighted_key(seed, epoch),
        *_keys.mixture_keys(seed, epoch, 2)[0],
        _keys.mixture_keys(seed, epoch, 2)[1],
        _keys.split_seed(seed),
        *(int(k) for k in _keys.order_keys(seed, epoch, 6)),
    }
    assert len(keys) == 12
