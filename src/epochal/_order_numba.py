"""The compiled kernels of :mod:`epochal._order_kernel` (imported only through it: needs numba)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["permute", "permute_range"]


_U64 = np.uint64
# every constant is a uint64: numba turns uint64 op int64 into float64
_C1, _C2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_HALF, _BITS = _U64(32), _U64(64)  # shifts: the hash's xorshift and the word size
_jit: Any = numba.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def _feistel(v: Any, keys: Any, low_bits: Any, high_bits: Any, inverse: bool) -> Any:
    # six rounds (epochal.order._ROUNDS) with a constant trip count, so the compiler
    # unrolls them; one Feistel pass of the domain, no branch on the value
    mask = (_U64(1) << low_bits) - _U64(1)
    high_shift, low_shift = _BITS - high_bits, _BITS - low_bits
    high, low = v >> low_bits, v & mask
    for i in range(6):
        r = 5 - i if inverse else i
        if r % 2 == 0:
            h = (low ^ keys[r]) * _C1
            h = (h ^ (h >> _HALF)) * _C2
            high ^= h >> high_shift
        else:
            h = (high ^ keys[r]) * _C1
            h = (h ^ (h >> _HALF)) * _C2
            low ^= h >> low_shift
    return (high << low_bits) | low


@_jit
def _walk(out: Any, keys: Any, low_bits: Any, high_bits: Any, n: Any, inverse: bool) -> None:
    # cycle walking, after one branch-free pass over every value (that pass is the
    # throughput: independent elements overlap in the CPU); few values are left here
    for i in range(out.shape[0]):
        v = _U64(out[i])
        while v >= n:
            v = _feistel(v, keys, low_bits, high_bits, inverse)
        out[i] = v


@_jit
def permute(
    x: Any, out: Any, keys: Any, low_bits: Any, high_bits: Any, n: Any, inverse: bool
) -> None:
    if inverse:
        for i in range(x.shape[0]):
            out[i] = _feistel(_U64(x[i]), keys, low_bits, high_bits, True)
    else:
        for i in range(x.shape[0]):
            out[i] = _feistel(_U64(x[i]), keys, low_bits, high_bits, False)
    _walk(out, keys, low_bits, high_bits, n, inverse)


@_jit
def permute_range(start: Any, out: Any, keys: Any, low_bits: Any, high_bits: Any, n: Any) -> None:
    for i in range(out.shape[0]):
        out[i] = _feistel(start + _U64(i), keys, low_bits, high_bits, False)
    _walk(out, keys, low_bits, high_bits, n, False)
