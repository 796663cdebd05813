"""The compiled kernels of :mod:`epochal._order_kernel` (imported only through it: needs numba)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["permute", "permute_range", "permute_range_table", "permute_table"]


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
def _feistel_table(v: Any, tables: Any, low_bits: Any, inverse: bool) -> Any:
    # the same rounds looked up: tables[r][half] is round r's hash of that half
    mask = (_U64(1) << low_bits) - _U64(1)
    high, low = v >> low_bits, v & mask
    for i in range(6):
        r = 5 - i if inverse else i
        if r % 2 == 0:
            high ^= _U64(tables[r, low])
        else:
            low ^= _U64(tables[r, high])
    return (high << low_bits) | low


@_jit
def _walk(
    out: Any, keys: Any, tables: Any, low_bits: Any, high_bits: Any, n: Any, inverse: bool
) -> None:
    # cycle walking, after one branch-free pass over every value (that pass is the
    # throughput: independent elements overlap in the CPU). The values still outside
    # [0, n) are listed without a branch and stepped in branch-free passes over the list:
    # a branch per value would mispredict for about one value in four. ``tables``: the
    # rounds looked up (an empty array: hashed)
    looked_up = tables.size > 0
    left = np.empty(out.shape[0], dtype=np.int64)
    k = 0
    for i in range(out.shape[0]):
        left[k] = i
        k += _U64(out[i]) >= n
    while k:
        still = 0
        for j in range(k):
            i = left[j]
            if looked_up:
                v = _feistel_table(_U64(out[i]), tables, low_bits, inverse)
            else:
                v = _feistel(_U64(out[i]), keys, low_bits, high_bits, inverse)
            out[i] = v
            left[still] = i
            still += v >= n
        k = still


_NO_TABLES = np.zeros((6, 0), dtype=np.uint16)
_NO_KEYS = np.zeros(6, dtype=np.uint64)


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
    _walk(out, keys, _NO_TABLES, low_bits, high_bits, n, inverse)


@_jit
def permute_range(start: Any, out: Any, keys: Any, low_bits: Any, high_bits: Any, n: Any) -> None:
    for i in range(out.shape[0]):
        out[i] = _feistel(start + _U64(i), keys, low_bits, high_bits, False)
    _walk(out, keys, _NO_TABLES, low_bits, high_bits, n, False)


# The table entry points repeat permute/permute_range on purpose: one function with a
# branch on "tables or keys" in its loop (even loop-invariant) kept LLVM from unswitching
# and vectorising the loop, 31 ns per index instead of 4-7 (bench_core --overhead-only).
# _walk can share one body: it steps few values.


@_jit
def permute_table(x: Any, out: Any, tables: Any, low_bits: Any, n: Any, inverse: bool) -> None:
    if inverse:
        for i in range(x.shape[0]):
            out[i] = _feistel_table(_U64(x[i]), tables, low_bits, True)
    else:
        for i in range(x.shape[0]):
            out[i] = _feistel_table(_U64(x[i]), tables, low_bits, False)
    _walk(out, _NO_KEYS, tables, low_bits, _U64(0), n, inverse)


@_jit
def permute_range_table(start: Any, out: Any, tables: Any, low_bits: Any, n: Any) -> None:
    for i in range(out.shape[0]):
        out[i] = _feistel_table(start + _U64(i), tables, low_bits, False)
    _walk(out, _NO_KEYS, tables, low_bits, _U64(0), n, False)
