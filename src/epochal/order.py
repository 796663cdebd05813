"""Order: which record sits at each position of an epoch, as a function of (seed, epoch).

A shuffled order is a keyed pseudo-random bijection on ``[0, n)`` computed per position,
so it needs O(1) memory (P2) and any position can be looked up without the ones before it
(the basis of O(1) resume, P4). It is a global shuffle: every record can land at every
position (P1).

The bijection is a Feistel network on the smallest power-of-two domain ``[0, 2**b)`` that
holds ``n``, split into a high half of ``ceil(b/2)`` bits and a low half of ``floor(b/2)``
bits. Each round XORs one half with a keyed hash of the other, alternating halves, so each
round (and the whole network) is a bijection on ``[0, 2**b)`` for every ``b``, balanced or
not. Values that land in ``[n, 2**b)`` are walked along their cycle until they fall back
into ``[0, n)`` (cycle walking), which restricts the bijection to exactly ``[0, n)``: no
record is dropped or repeated at any ``n``, including ``2**k + 1``. Since ``2**b < 2n``,
a position needs fewer than two passes on average.

The mapping is part of epochal's contract (a golden test pins it): changing the hash, the
key schedule or the number of rounds changes every shuffled run, so do not.
"""

from __future__ import annotations

from typing import overload

import numpy as np

from epochal import _order_kernel
from epochal._errors import InvalidTypeError, InvalidValueError, OutOfRangeError
from epochal._keys import order_keys
from epochal._keys import round_hash as _hash

__all__ = ["MAX_RECORDS", "IdentityOrder", "Order", "ShuffledOrder", "make_order"]

MAX_RECORDS = 1 << 62  # largest supported n: the domain and its halves fit in uint64 arithmetic
_ROUNDS = 6  # 3 rounds per half: well mixed by every statistical test in tests/test_order.py
_CHUNK = 1 << 16  # positions per vectorised block: keeps temporaries in the CPU cache
# the rounds are looked up in tables while a half has at most this many bits (n <= 2**28):
# 6 tables of <= 2**14 uint16 hashes (<= 192 KiB) stay in the CPU's L2 cache; above it a
# lookup misses the cache and costs more than the hash it replaces
_TABLE_BITS = 14
# inputs the compiled kernel takes as they are (one compilation each); others use numpy
_KERNEL_DTYPES = (np.dtype(np.int64), np.dtype(np.uint64))


def _check_n(n: int) -> int:
    n = int(n)
    if not 1 <= n <= MAX_RECORDS:
        raise InvalidValueError(f"an order needs 1 <= n <= 2**62 records, got n={n}")
    return n


def _as_positions(positions: np.ndarray | list[int] | range, n: int, what: str) -> np.ndarray:
    array = np.asarray(positions)
    if array.dtype.kind not in "iu":
        raise InvalidTypeError(f"{what} must be integers, got an array of dtype {array.dtype}")
    if array.dtype == np.int64:  # negatives read as huge unsigned values: one pass, both ends
        outside = array.size and int(array.view(np.uint64).max()) >= n
    else:
        outside = array.size and (array.min() < 0 or array.max() >= n)
    if outside:
        bad = array[(array < 0) | (array >= n)].flat[0]
        raise OutOfRangeError(f"{what} {int(bad)} is out of range for an order of n={n}")
    return array


def _check_range(start: int, stop: int, n: int) -> None:
    if not 0 <= start <= stop <= n:
        raise OutOfRangeError(f"positions [{start}, {stop}) are out of range for an order of n={n}")


class Order:
    """Base of the orders: ``index(positions)`` and its inverse ``position(indices)``."""

    n: int

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, position: int) -> int: ...
    @overload
    def __getitem__(self, position: slice) -> np.ndarray: ...
    def __getitem__(self, position: int | slice) -> int | np.ndarray:
        if isinstance(position, slice):
            return self.index(np.arange(self.n, dtype=np.int64)[position])
        position = int(position)
        if position < 0:
            position += self.n
        return int(self.index(np.array([position], dtype=np.int64))[0])

    def index(self, positions: np.ndarray | list[int] | range) -> np.ndarray:
        """The record index at each position (int64 array of the same shape)."""
        raise NotImplementedError

    def position(self, indices: np.ndarray | list[int] | range) -> np.ndarray:
        """The position of each record index (the inverse of :meth:`index`)."""
        raise NotImplementedError

    def index_range(self, start: int, stop: int) -> np.ndarray:
        """``index(np.arange(start, stop))``: the record indices at positions ``[start, stop)``."""
        _check_range(start, stop, self.n)
        return self.index(np.arange(start, stop, dtype=np.int64))


class IdentityOrder(Order):
    """The unshuffled order: position ``p`` holds record ``p`` (``shuffle=False``)."""

    def __init__(self, n: int) -> None:
        self.n = _check_n(n)

    def index(self, positions: np.ndarray | list[int] | range) -> np.ndarray:
        """Record indices at ``positions``: the positions themselves."""
        return _as_positions(positions, self.n, "position").astype(np.int64, copy=True)

    def position(self, indices: np.ndarray | list[int] | range) -> np.ndarray:
        """Positions of record ``indices``: the indices themselves."""
        return _as_positions(indices, self.n, "record index").astype(np.int64, copy=True)

    def index_range(self, start: int, stop: int) -> np.ndarray:
        """Record indices at positions ``[start, stop)``: the range itself."""
        _check_range(start, stop, self.n)
        return np.arange(start, stop, dtype=np.int64)

    def __repr__(self) -> str:
        return f"IdentityOrder(n={self.n})"


class ShuffledOrder(Order):
    """A keyed pseudo-random permutation of ``[0, n)`` from ``(seed, epoch)``.

    ``ShuffledOrder(n, seed=s, epoch=e).index(positions)`` is vectorised and needs O(1)
    memory beyond its input and output; two epochs (or seeds) give unrelated orders.

    Args:
        n: number of records, ``1 <= n <= 2**62``.
        seed: the run's seed, in ``[0, 2**64)``.
        epoch: the epoch, in ``[0, 2**64)``.
    """

    def __init__(self, n: int, *, seed: int, epoch: int) -> None:
        self.n = _check_n(n)
        self._keys = order_keys(seed, epoch, _ROUNDS)
        self.seed, self.epoch = int(seed), int(epoch)
        bits = max(2, (self.n - 1).bit_length())
        self._low_bits = bits // 2
        self._high_bits = bits - self._low_bits
        # the compiled kernel's arguments (epochal._order_kernel), all uint64 like its arithmetic
        self._kernel_args = (
            np.array(self._keys, dtype=np.uint64),
            np.uint64(self._low_bits),
            np.uint64(self._high_bits),
            np.uint64(self.n),
        )
        self._tables: np.ndarray | None = None
        self._wide_tables: np.ndarray | None = None  # the same as uint64, for the numpy path
        # hashes in the tables: a call of fewer positions computes its rounds instead
        self._table_cost = 3 * ((1 << self._low_bits) + (1 << self._high_bits))

    def __getstate__(self) -> dict[str, object]:
        # the tables are a cache of (seed, epoch): rebuilt where needed, never pickled
        return {**self.__dict__, "_tables": None, "_wide_tables": None}

    def round_tables(self) -> np.ndarray | None:
        """Each Feistel round's hash of every value of the half it reads, or None where a
        half is too wide for tables (``n > 2**28``).

        A ``(6, 2**high_bits)`` uint16 array: ``tables[r][v]`` is round ``r``'s
        :func:`~epochal._keys.round_hash` of half value ``v`` (even rounds read the low
        half, odd rounds the high one). A round then costs one cached load instead of a
        keyed hash: the same bits, ~2x faster compiled and ~3x faster in numpy. Built
        once per order (``3 * (2**low_bits + 2**high_bits)`` hashes, well under a
        millisecond) and kept.
        """
        if self._tables is None and self._high_bits <= _TABLE_BITS:
            low_bits, high_bits = self._low_bits, self._high_bits
            tables = np.zeros((_ROUNDS, 1 << high_bits), dtype=np.uint16)
            for r in range(_ROUNDS):
                reads, writes = (low_bits, high_bits) if r % 2 == 0 else (high_bits, low_bits)
                half = np.arange(1 << reads, dtype=np.uint64)
                hashed = _hash(
                    half, self._keys[r], writes, np.empty_like(half), np.empty_like(half)
                )
                tables[r, : half.size] = hashed
            self._tables = tables
        return self._tables

    def _tables_for(self, size: int) -> np.ndarray | None:
        """The round tables for a call on ``size`` positions: built when the call is at
        least as large as the tables (their cost is then paid back), else only if built."""
        if self._tables is None and size < self._table_cost:
            return None
        return self.round_tables()

    def __repr__(self) -> str:
        return f"ShuffledOrder(n={self.n}, seed={self.seed}, epoch={self.epoch})"

    def index(self, positions: np.ndarray | list[int] | range) -> np.ndarray:
        """Record indices at ``positions`` (any shape), as int64."""
        array = _as_positions(positions, self.n, "position")
        return self._apply(array, inverse=False)

    def position(self, indices: np.ndarray | list[int] | range) -> np.ndarray:
        """Positions of record ``indices`` (any shape), as int64: the inverse of ``index``."""
        array = _as_positions(indices, self.n, "record index")
        return self._apply(array, inverse=True)

    def index_range(self, start: int, stop: int) -> np.ndarray:
        """Record indices at positions ``[start, stop)``: the range is checked once (which
        puts every position in bounds), then permuted by the compiled kernel when loaded (see
        :mod:`epochal._order_kernel`), else from a uint64 ``arange`` (no positions array to
        check and convert)."""
        _check_range(start, stop, self.n)
        if kernels := _order_kernel.kernels(stop - start):
            out = np.empty(stop - start, dtype=np.int64)
            if (tables := self._tables_for(out.size)) is not None:
                _, low_bits, _, n = self._kernel_args
                kernels.permute_range_table(np.uint64(start), out, tables, low_bits, n)
            else:
                kernels.permute_range(np.uint64(start), out, *self._kernel_args)
            return out
        return self._apply(np.arange(start, stop, dtype=np.uint64), inverse=False, fresh=True)

    def _apply(self, array: np.ndarray, *, inverse: bool, fresh: bool = False) -> np.ndarray:
        """The permutation (or its inverse) of ``array``; ``fresh``: ``array`` is a new uint64
        array of the caller's, permuted in place instead of copied first."""
        if array.dtype in _KERNEL_DTYPES and (kernels := _order_kernel.kernels(array.size)):
            # the same mapping compiled: reads the input once and writes the result once
            out = np.empty(array.shape, dtype=np.int64)
            if (tables := self._tables_for(array.size)) is not None:
                _, low_bits, _, n = self._kernel_args
                kernels.permute_table(array.ravel(), out.reshape(-1), tables, low_bits, n, inverse)
            else:
                kernels.permute(array.ravel(), out.reshape(-1), *self._kernel_args, inverse)
            return out
        # a copy unless fresh: permuted in place from here on
        x = array.ravel() if fresh else array.astype(np.uint64).ravel()
        if (tables := self._tables_for(x.size)) is not None:
            if self._wide_tables is None:  # numpy's take reads them into uint64 scratch
                self._wide_tables = tables.astype(np.uint64)
            tables = self._wide_tables
        self._permute_domain(x, inverse, tables)
        # cycle walking: values that left [0, n) take another step along their cycle;
        # fewer than half do at each step, so this ends after a few short passes
        outside = np.flatnonzero(x >= self.n)
        while outside.size:
            y = x[outside]
            self._permute_domain(y, inverse, tables)
            x[outside] = y
            outside = outside[y >= self.n]
        # every value is now below n <= 2**62: the same bits read as int64, no copy
        return x.view(np.int64).reshape(array.shape)

    def _permute_domain(self, x: np.ndarray, inverse: bool, tables: np.ndarray | None) -> None:
        """Apply the Feistel permutation of ``[0, 2**b)`` to ``x`` in place, block by block
        (the rounds looked up in ``tables``, uint64 :meth:`round_tables`, when given)."""
        # the halves and the hash's two scratch arrays, allocated once for every block
        scratch = np.empty((4, min(x.size, _CHUNK)), dtype=np.uint64)
        for lo in range(0, x.size, _CHUNK):
            block = x[lo : lo + _CHUNK]
            self._feistel(block, inverse, tables, *scratch[:, : block.size])

    def _feistel(
        self,
        x: np.ndarray,
        inverse: bool,
        tables: np.ndarray | None,
        high: np.ndarray,
        low: np.ndarray,
        h: np.ndarray,
        t: np.ndarray,
    ) -> None:
        """The Feistel network on ``x`` in place; ``high``, ``low``, ``h``, ``t``: scratch."""
        low_bits, high_bits = self._low_bits, self._high_bits
        np.right_shift(x, np.uint64(low_bits), out=high)
        np.bitwise_and(x, np.uint64((1 << low_bits) - 1), out=low)
        rounds = range(_ROUNDS - 1, -1, -1) if inverse else range(_ROUNDS)
        for r in rounds:
            # even rounds change the high half from the low one, odd rounds the reverse;
            # XOR with a function of the other half is its own inverse
            reads, changes, bits = (low, high, high_bits) if r % 2 == 0 else (high, low, low_bits)
            if tables is None:
                changes ^= _hash(reads, self._keys[r], bits, h, t)
            else:  # every half value is in its table: "clip" skips the bounds pass
                np.take(tables[r], reads.view(np.int64), out=h, mode="clip")
                changes ^= h
        high <<= np.uint64(low_bits)
        np.bitwise_or(high, low, out=x)


def make_order(n: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> Order:
    """The order of epoch ``epoch``: shuffled from ``(seed, epoch)``, or the identity.

    Args:
        n: number of records.
        seed: the run's seed (ignored when ``shuffle`` is False).
        epoch: the epoch (ignored when ``shuffle`` is False).
        shuffle: False gives :class:`IdentityOrder`.
    """
    if shuffle:
        return ShuffledOrder(n, seed=seed, epoch=epoch)
    return IdentityOrder(n)
