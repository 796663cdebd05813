"""``Order.index_range``: the Loader's one-rank path computes each block's order from a
range (issue #18); it must equal ``index(np.arange(start, stop))`` exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _budget import examples
from epochal.order import IdentityOrder, Order, ShuffledOrder


@settings(max_examples=examples(60), deadline=None)
@given(
    n=st.one_of(st.integers(1, 5000), st.sampled_from([2**20 - 1, 2**20, 2**20 + 1, 2**40 + 1])),
    seed=st.integers(0, 2**64 - 1),
    data=st.data(),
)
def test_index_range_equals_index_of_the_positions(n, seed, data):
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, min(n, start + 3000)))
    for order in (ShuffledOrder(n, seed=seed, epoch=3), IdentityOrder(n)):
        got = order.index_range(start, stop)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, order.index(np.arange(start, stop, dtype=np.int64)))


class _PlainOrder(Order):
    """An order with only ``index``: the base class's range falls back to it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def index(self, positions):
        return (np.asarray(positions, dtype=np.int64) * 7) % self.n


def test_index_range_checks_the_range_and_falls_back_to_index():
    order = ShuffledOrder(10, seed=0, epoch=0)
    assert order.index_range(0, 10).tolist() == [7, 0, 2, 3, 9, 5, 4, 1, 8, 6]  # the golden order
    for start, stop in ((-1, 3), (3, 11), (5, 4)):
        with pytest.raises(IndexError, match=r"out of range for an order of n=10"):
            order.index_range(start, stop)
    assert _PlainOrder(10).index_range(2, 5).tolist() == [4, 1, 8]
