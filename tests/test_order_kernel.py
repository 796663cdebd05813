"""The compiled order kernel (``fast`` extra, numba) gives the numpy path's bits exactly.

The numpy path of :class:`epochal.order.ShuffledOrder` is the definition (golden tests in
test_order.py); the kernel must reproduce it for every size, seed, epoch, input dtype and
direction, cycle walking included. Skipped where numba is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _budget import examples
from _rounds import ROUNDS, rounds
from epochal import _order_kernel
from epochal.order import MAX_RECORDS, ShuffledOrder

pytest.importorskip("numba")


def numpy_only(fn):
    """``fn()`` with the kernel hidden: the orders take the numpy path, rounds hashed (the
    definition)."""
    with mock.patch.object(_order_kernel, "kernels", lambda size: None), rounds("hashed"):
        return fn()


@pytest.fixture(autouse=True, scope="module")
def kernel_loaded():
    # the rest of the suite runs the numpy path (EPOCHAL_NO_NUMBA=1, tests/conftest.py):
    # load the kernel here; once loaded, every call takes it, however small
    with mock.patch.dict(os.environ, {"EPOCHAL_NO_NUMBA": "0"}):
        _order_kernel._tried = False
        assert _order_kernel.kernels(_order_kernel.MIN_SIZE) is not None
    yield


@pytest.mark.parametrize("way", ROUNDS)
def test_golden_order_through_the_kernel(way):
    epoch_1 = [1, 4, 7, 6, 8, 3, 5, 2, 0, 9]
    with rounds(way):
        assert ShuffledOrder(10, seed=0, epoch=0)[:].tolist() == [7, 0, 2, 3, 9, 5, 4, 1, 8, 6]
        assert ShuffledOrder(10, seed=0, epoch=1).index_range(0, 10).tolist() == epoch_1


@settings(max_examples=examples(40), deadline=None)
@given(
    n=st.one_of(
        st.integers(1, 70_000),
        st.sampled_from([2**16, 2**16 + 1, 2**31 + 1, 2**40 + 1, MAX_RECORDS - 1, MAX_RECORDS]),
    ),
    seed=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 2**64 - 1),
    dtype=st.sampled_from([np.int64, np.uint64, np.int32, np.uint16]),
    way=st.sampled_from(ROUNDS),
    data=st.data(),
)
def test_kernel_equals_numpy_path(n, seed, epoch, dtype, way, data):
    order = ShuffledOrder(n, seed=seed, epoch=epoch)
    top = min(n, np.iinfo(dtype).max + 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    positions = rng.integers(0, top, size=data.draw(st.integers(0, 3000)), dtype=np.uint64)
    positions = np.concatenate([positions, np.array([0, top - 1], np.uint64)]).astype(dtype)
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, min(n, start + 5000)))

    with rounds(way):  # the kernel's rounds hashed or looked up
        got = order.index(positions), order.position(positions), order.index_range(start, stop)
    want = numpy_only(
        lambda: (order.index(positions), order.position(positions), order.index_range(start, stop))
    )
    for g, w in zip(got, want):
        assert g.dtype == np.int64 and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(order.position(got[0]), positions.astype(np.int64))


@pytest.mark.parametrize("way", ROUNDS)
def test_kernel_whole_epoch_is_the_numpy_epoch(way):
    # a whole epoch at a size where cycle walking takes several steps for some values
    order = ShuffledOrder(2**17 + 3, seed=11, epoch=5)
    with rounds(way):
        got = order.index_range(0, order.n)
    np.testing.assert_array_equal(got, numpy_only(lambda: order.index_range(0, order.n)))
    assert np.array_equal(np.sort(got), np.arange(order.n))


def test_bad_positions_are_refused_before_the_kernel():
    order = ShuffledOrder(100, seed=1, epoch=0)
    with pytest.raises(Exception, match="out of range"):
        order.index(np.array([0, 100]))
    with pytest.raises(Exception, match="out of range"):
        order.index_range(0, 101)


def test_import_epochal_does_not_import_numba():
    # numba takes ~1 s to import: small order calls never load it, and EPOCHAL_NO_NUMBA=1
    # keeps it out even for a large one (the numpy path)
    code = (
        "import sys, numpy as np; import epochal; from epochal.order import ShuffledOrder; "
        "o = ShuffledOrder(10**6, seed=1, epoch=2); o.index(np.arange(100)); "
        "assert 'numba' not in sys.modules, 'small call'; "
        "import os; os.environ['EPOCHAL_NO_NUMBA'] = '1'; o.index_range(0, 10**5); "
        "assert 'numba' not in sys.modules, 'switched off'"
    )
    env = {k: v for k, v in os.environ.items() if k != "EPOCHAL_NO_NUMBA"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
