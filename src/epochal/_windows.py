"""Windowed order: a shuffle that reads a store larger than its cache one window at a time.

A global shuffle touches every shard of a store in its first batches, so a cache smaller
than the store thrashes, and W ranks each download the whole store. The windowed order
reads the epoch in windows that fit the cache, gives each rank a window slice of its own
blocks, and still mixes batches like a global shuffle, also on a store written in label
order. It is an :class:`epochal.order.Order`: a pure function of (seed, epoch, position),
O(1) memory, exact for every ``n``, so resume stays O(1).

Geometry (a :class:`WindowLayout` of ``n`` records, block size ``b``, window bound ``S``,
and the world size ``W`` and batch size ``B`` it was made for; ``G = B * W``):

- Blocks are global record ranges: block ``k`` is records ``[k*b, (k+1)*b)``. A keyed
  bijection (:class:`epochal.order.ShuffledOrder` under its own salt) permutes the
  ``n // b`` full blocks into the *block order*; the ``n % b`` tail records come last, as
  they are. Block-order slot ``q`` holds record ``perm(q // b) * b + q % b`` (or ``q`` in
  the tail): O(1).
- Windows are consecutive block-order ranges. The epoch's ``NG = n // G`` full global
  batches are cut into ``ceil(NG / (S // G))`` windows as evenly as the plan cuts a last
  batch: the first ``NG % windows`` windows hold one global batch more. Even windows keep
  the smallest window's mixing close to the largest's and let every rank own its part of
  every window (a short last window permuted as a whole would be downloaded by every rank).
- In a window of ``M`` global batches, layout rank ``r`` owns the contiguous block-order
  range ``[start + r*M*B, start + (r+1)*M*B)``: about ``M*B/b`` blocks of its own and at
  most 2 it shares with a neighbour. Its positions ``start + j*G + r*B + u`` (global batch
  ``j`` of the window, slot ``u``) are its local stream ``t = j*B + u``, which a keyed
  bijection of ``[0, M*B)`` (one per window and rank: the Feistel network of
  ``ShuffledOrder`` with each element's round keys tweaked by its window and rank) maps into
  that range. Plan positions thus become, per rank, reads of that rank's blocks only.
- The final ``n % G`` positions (the epoch's partial global batch) are permuted as a whole
  over the last block-order slots and belong to the last window; every rank may read them.

Mixing arithmetic. A store written in label order has single-label blocks. A batch of ``B``
records drawn from ``K`` equally likely blocks has a label-histogram variance of about
``(1 + B/K)`` times a global shuffle's (the window's own mix of blocks adds ``1/K`` to the
``1/B`` of the draw), so its total-variation distance to the global histogram is about
``sqrt(1 + B/K)`` times a global shuffle's. :func:`choose_layout` makes each rank's slice
of the smallest window hold ``K >= 2*B`` blocks, a factor of at most ``sqrt(1.5) = 1.22``
(``WindowLayout.mixing_factor``; the loader logs it).

Cache arithmetic. The cache holds three windows per rank that shares it: the one being
read, the next one being prefetched and the one whose batches are still in flight. So a
rank's window slice is ``cache_bytes / (3 * LOCAL_WORLD_SIZE)`` bytes at most (ranks on
one node share the default cache directory; torchrun sets ``LOCAL_WORLD_SIZE``).

Elastic resume. The order depends on the layout, and the layout on the topology, so the
loader state records the layout of the current epoch. A resume (with any world size or
batch size) finishes that epoch with the layout it started with: still exact, neither a
repeat nor a skip, because the order is a function of positions only; only the byte saving
degrades (a rank then reads the slices of every layout rank its positions touch) until the
epoch ends. The next epoch gets a layout made for the new topology.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from epochal._errors import Error, OutOfRangeError, StateError
from epochal.order import (
    _CHUNK,
    _ROUNDS,
    MAX_RECORDS,
    Order,
    ShuffledOrder,
    _as_positions,
    _check_seed_epoch,
    _hash,
    _splitmix64,
)
from epochal.plan import Plan

__all__ = [
    "EpochWindows",
    "ReadHint",
    "WindowFeed",
    "WindowLayout",
    "WindowedOrder",
    "WindowedSource",
    "choose_layout",
    "describe_layout",
    "read_hint",
]

log = logging.getLogger("epochal")

WINDOWS_IN_CACHE = 3  # the window being read, the next one prefetched, the one in flight
BLOCKS_PER_BATCH = 2  # blocks per rank-window slice per batch slot: mixing <= sqrt(1.5)x
MIXING_GOAL = 1.25  # describe_layout says when a layout mixes worse than this
# salts keep the block, window-slice and final-batch bijections unrelated to each other
# and to the plain order of the same (seed, epoch)
_SALT_BLOCKS = 0x6A09E667F3BCC908
_SALT_SLICES = 0xBB67AE8584CAA73B
_SALT_FINAL = 0x3C6EF372FE94F82B
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ReadHint:
    """What a source that reads remotely tells the loader, so it can pick a window layout.

    Attributes:
        record_bytes: mean stored bytes per record (all columns).
        cache_bytes: the cache bound in bytes.
        min_block_records: the smallest record range the source can fetch and verify as
            one unit; blocks are multiples of it.
    """

    record_bytes: float
    cache_bytes: int
    min_block_records: int

    def __post_init__(self) -> None:
        if not (isinstance(self.record_bytes, (int, float)) and self.record_bytes > 0):
            raise Error(f"ReadHint.record_bytes must be a number > 0, got {self.record_bytes!r}")
        for name in ("cache_bytes", "min_block_records"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Error(f"ReadHint.{name} must be an integer >= 1, got {value!r}")


class WindowedSource(Protocol):
    """A source that reads remotely and can be told which records the next windows need.

    The loader calls these from its main process only, from the generator of batch
    requests, so ``schedule`` runs ahead of the batches (by the DataLoader's prefetch).
    """

    def read_hint(self) -> ReadHint | None:
        """A hint for a windowed order; None when the plain global order is fine (the
        store is local, or fits the cache)."""
        ...

    def schedule(self, ranges: np.ndarray, *, window: int) -> None:
        """Start fetching ``ranges`` for ``window``, without blocking.

        Args:
            ranges: int64 array ``(k, 2)`` of ``[start, stop)`` record ranges this rank
                reads in the window, each inside one block, in the order they are first
                needed (the first batch's blocks first).
            window: an id that increases with every window this loader schedules (across
                epochs and passes); not the window's index within its epoch. Called for a
                window when its first batch request is made (if not already) and, at the
                same time, for the next window (prefetch ahead).
        """
        ...

    def retire(self, *, window: int) -> None:
        """Every range scheduled for window ids ``<= window`` may now be evicted (called when
        the requests of window id ``window + 2`` begin)."""
        ...


_LAYOUT_FIELDS = ("num_records", "block_records", "window_records", "world_size", "batch_size")


@dataclass(frozen=True, kw_only=True)
class WindowLayout:
    """How a windowed order cuts an epoch (see the module docstring for the geometry).

    JSON-able with :meth:`as_dict` / :meth:`from_dict`; the loader keeps the current
    epoch's layout in its state so that a resume uses the same order.

    Attributes:
        num_records: ``n``, records in the epoch.
        block_records: ``b``, records per block (a multiple of the source's fetch unit).
        window_records: ``S``, the most records one window holds over all ranks; a
            multiple of the global batch ``batch_size * world_size``.
        world_size: the world size the layout was made for.
        batch_size: the per-rank batch size the layout was made for.
    """

    num_records: int
    block_records: int
    window_records: int
    world_size: int
    batch_size: int

    def __post_init__(self) -> None:
        for name in _LAYOUT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Error(f"WindowLayout.{name} must be an integer >= 1, got {value!r}")
        if self.num_records > MAX_RECORDS:
            raise Error(f"WindowLayout.num_records must be <= 2**62, got {self.num_records}")
        if self.window_records % self.global_batch_size:
            raise Error(
                f"WindowLayout.window_records={self.window_records} must be a multiple of the "
                f"global batch {self.global_batch_size} (batch_size {self.batch_size} x "
                f"world_size {self.world_size})"
            )

    def as_dict(self) -> dict[str, int]:
        """The layout as a plain JSON-able dict."""
        return {name: getattr(self, name) for name in _LAYOUT_FIELDS}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> WindowLayout:
        """The layout :meth:`as_dict` gave.

        Raises:
            Error: ``value`` is not a dict of exactly the layout's fields, or they are invalid.
        """
        if not isinstance(value, Mapping) or set(value) != set(_LAYOUT_FIELDS):
            got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise Error(f"a window layout needs exactly the keys {list(_LAYOUT_FIELDS)}, got {got}")
        return cls(**{name: value[name] for name in _LAYOUT_FIELDS})

    @property
    def global_batch_size(self) -> int:
        """``batch_size * world_size`` of the layout."""
        return self.batch_size * self.world_size

    @property
    def _cut(self) -> tuple[int, int, int, int]:
        """``(NG, full_windows, base, extra)``: windows ``< extra`` hold ``base + 1`` global batches."""
        total = self.num_records // self.global_batch_size
        if total == 0:
            return 0, 0, 0, 0
        windows = -(-total // (self.window_records // self.global_batch_size))
        base, extra = divmod(total, windows)
        return total, windows, base, extra

    @property
    def num_windows(self) -> int:
        """Windows per epoch (at least 1: an epoch shorter than a global batch is one)."""
        return max(1, self._cut[1])

    def window_bounds(self, window: int) -> tuple[int, int, int]:
        """``(start, ranked_stop, stop)`` positions of ``window``.

        ``[start, ranked_stop)`` holds the window's full global batches, owned rank by
        rank; ``[ranked_stop, stop)`` is the epoch's final partial global batch (last
        window only, else empty). Positions and block-order slots of a window coincide.
        """
        if not 0 <= window < self.num_windows:
            raise OutOfRangeError(
                f"window {window} is out of range: this layout has {self.num_windows}"
            )
        _total, windows, base, extra = self._cut
        g = self.global_batch_size
        if windows == 0:
            return 0, 0, self.num_records
        start = (window * (base + 1) if window < extra else extra + window * base) * g
        ranked_stop = start + (base + (window < extra)) * g
        stop = self.num_records if window == windows - 1 else ranked_stop
        return start, ranked_stop, stop

    def window_at(self, position: int) -> int:
        """The window of epoch position ``position`` (a Python int)."""
        total, windows, base, extra = self._cut
        g = self.global_batch_size
        big = extra * (base + 1) * g
        if position >= total * g:
            return max(0, windows - 1)
        if position < big:
            return position // ((base + 1) * g)
        return extra + (position - big) // (base * g)

    @property
    def slice_blocks(self) -> float:
        """``K``: blocks in one rank's slice of the smallest window (what a batch mixes)."""
        _total, windows, base, _ = self._cut
        if windows == 0:
            return self.num_records / self.block_records
        return base * self.batch_size / self.block_records

    @property
    def mixing_factor(self) -> float:
        """Expected batch mixing: TV distance to the global label histogram, in units of a
        global shuffle's, ``sqrt(1 + B/K)`` for a store written in label order."""
        return math.sqrt(1 + self.batch_size / max(self.slice_blocks, 1e-9))


def _ranks_sharing_cache() -> int:
    value = os.environ.get("LOCAL_WORLD_SIZE", "1")
    try:
        ranks = int(value)
    except ValueError:
        ranks = 0
    if ranks < 1:
        raise Error(f"LOCAL_WORLD_SIZE must be an integer >= 1, got {value!r}")
    return ranks


def choose_layout(
    hint: ReadHint, *, num_records: int, batch_size: int, world_size: int
) -> WindowLayout:
    """The window layout for a store read through a bounded cache.

    A rank's window slice gets ``cache_bytes / (3 * LOCAL_WORLD_SIZE)`` bytes (a whole
    number of batches); the block size is the largest multiple of the source's fetch unit
    that leaves ``K >= 2 * batch_size`` blocks in each rank's slice of the smallest window
    (see the module docstring), and at least one fetch unit.

    Raises:
        Error: the cache cannot hold three windows of one batch (and one fetch unit) per
            rank that shares it; the message gives the smallest cache_size that can.
    """
    sharing = _ranks_sharing_cache()
    unit = hint.min_block_records
    per_rank = int(hint.cache_bytes / (WINDOWS_IN_CACHE * sharing) // hint.record_bytes)
    per_rank -= per_rank % batch_size
    need = max(batch_size, -(-unit // batch_size) * batch_size)
    if per_rank < need:
        least = math.ceil(WINDOWS_IN_CACHE * sharing * need * hint.record_bytes)
        raise Error(
            f"cache_size={hint.cache_bytes} bytes ({hint.cache_bytes / _MIB:.1f} MiB) is too "
            f"small to read this store in windows: each of the {sharing} rank(s) sharing the "
            f"cache needs {WINDOWS_IN_CACHE} windows of at least {need} records "
            f"(~{hint.record_bytes:.0f} bytes each); use cache_size >= {least} bytes "
            f"({least / _MIB:.1f} MiB)"
        )
    g = batch_size * world_size
    total = num_records // g
    batches = per_rank // batch_size  # global batches per window
    if total:
        batches = min(batches, total)
    layout = WindowLayout(
        num_records=num_records,
        block_records=unit,
        window_records=batches * g,
        world_size=world_size,
        batch_size=batch_size,
    )
    smallest = layout._cut[2] * batch_size  # records in a rank's slice of the smallest window
    block = smallest // (BLOCKS_PER_BATCH * batch_size) // unit * unit
    return WindowLayout(**{**layout.as_dict(), "block_records": max(unit, block)})


def read_hint(source: Any) -> ReadHint | None:
    """The source's :class:`ReadHint`, or None when it has none (or reads locally).

    Raises:
        Error: the source gives a hint but cannot be scheduled, or the hint has the wrong type.
    """
    method = getattr(source, "read_hint", None)
    if not callable(method):
        return None
    hint = method()
    if hint is None:
        return None
    if not isinstance(hint, ReadHint):
        raise Error(
            f"{type(source).__name__}.read_hint() must return a ReadHint or None, got {hint!r}"
        )
    missing = [name for name in ("schedule", "retire") if not callable(getattr(source, name, None))]
    if missing:
        raise Error(
            f"{type(source).__name__} gives a read hint but has no {' or '.join(missing)}(); "
            f"a windowed source needs read_hint, schedule and retire"
        )
    return hint


def describe_layout(layout: WindowLayout, hint: ReadHint | None = None) -> str:
    """One line saying what a layout reads: blocks, windows and the mixing it promises."""
    b, s = layout.block_records, layout.window_records
    per_rank = s // layout.world_size

    def size(records: int) -> str:
        return "" if hint is None else f" (~{records * hint.record_bytes / _MIB:.2f} MiB)"

    return (
        f"windowed order: blocks of {b} records{size(b)}, windows of up to {s} records, "
        f"{per_rank} per rank{size(per_rank)}, {layout.num_windows} windows per epoch, "
        f"made for world_size {layout.world_size} x batch_size {layout.batch_size}; expected "
        f"batch mixing {layout.mixing_factor:.2f}x a global shuffle's"
    ) + (
        ""
        if layout.mixing_factor <= MIXING_GOAL
        else f" (above the {MIXING_GOAL}x goal: a rank's window holds only "
        f"{layout.slice_blocks:.0f} blocks for batches of {layout.batch_size}, too few for "
        f"this store at this cache size; a larger cache_size or a smaller batch_size mixes better)"
    )


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of each element of a uint64 array (a new array)."""
    z = x + _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _C1
    z ^= z >> np.uint64(27)
    z *= _C2
    z ^= z >> np.uint64(31)
    return z


class _TweakedFeistel:
    """Keyed bijections of ``[0, m)``, one per 64-bit tweak, for many tweaks in one call.

    The Feistel network and cycle walk of :class:`epochal.order.ShuffledOrder` with every
    element's round keys XORed with its own tweak, so one vectorised call permutes the
    local streams of many (window, rank) slices, each by its own bijection.
    """

    def __init__(self, m: int, key: int) -> None:
        self.m = m
        bits = max(2, (m - 1).bit_length())
        self._low_bits = bits // 2
        self._high_bits = bits - self._low_bits
        keys = []
        for _ in range(_ROUNDS):
            key = _splitmix64(key)
            keys.append(np.uint64(key))
        self._keys = keys

    def apply(self, x: np.ndarray, tweaks: np.ndarray, *, inverse: bool) -> np.ndarray:
        """``x`` (uint64, values in ``[0, m)``) through each element's bijection (a new array)."""
        x = self._feistel(x, tweaks, inverse)
        outside = np.flatnonzero(x >= self.m)
        while outside.size:  # cycle walking, as in ShuffledOrder
            y = self._feistel(x[outside], tweaks[outside], inverse)
            x[outside] = y
            outside = outside[y >= self.m]
        return x

    def _feistel(self, x: np.ndarray, tweaks: np.ndarray, inverse: bool) -> np.ndarray:
        low_bits, high_bits = self._low_bits, self._high_bits
        high = x >> np.uint64(low_bits)
        low = x & np.uint64((1 << low_bits) - 1)
        h, t, k = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        rounds = range(_ROUNDS - 1, -1, -1) if inverse else range(_ROUNDS)
        for r in rounds:
            np.bitwise_xor(tweaks, self._keys[r], out=k)
            if r % 2 == 0:
                high ^= _hash(low, k, high_bits, h, t)
            else:
                low ^= _hash(high, k, low_bits, h, t)
        high <<= np.uint64(low_bits)
        high |= low
        return high


class WindowedOrder(Order):
    """The windowed order of one epoch: a keyed bijection on ``[0, n)`` (module docstring).

    Args:
        layout: the epoch's :class:`WindowLayout`.
        seed: the run's seed, in ``[0, 2**64)``.
        epoch: the epoch, in ``[0, 2**64)``.
    """

    def __init__(self, layout: WindowLayout, *, seed: int, epoch: int) -> None:
        seed, epoch = int(seed), int(epoch)
        _check_seed_epoch(seed, epoch)
        self.layout = layout
        self.seed, self.epoch = seed, epoch
        self.n = n = layout.num_records
        b, g = layout.block_records, layout.global_batch_size
        self._full_blocks = n // b
        self._blocks = None
        if self._full_blocks:
            blocks_seed = _splitmix64(seed ^ _SALT_BLOCKS)
            self._blocks = ShuffledOrder(self._full_blocks, seed=blocks_seed, epoch=epoch)
        total, _windows, base, extra = layout._cut
        self._ranked = total * g
        self._final = None
        if n > self._ranked:
            final_seed = _splitmix64(seed ^ _SALT_FINAL)
            self._final = ShuffledOrder(n - self._ranked, seed=final_seed, epoch=epoch)
        key = _splitmix64(_splitmix64(seed ^ _SALT_SLICES) ^ epoch)
        self._tweak_key = np.uint64(key)
        # (first position, stop, global batches per window, first window): windows of
        # base + 1 global batches, then windows of base
        self._groups: list[tuple[int, int, int, int]] = []
        self._slices: dict[int, _TweakedFeistel] = {}
        big = extra * (base + 1) * g
        for lo, hi, m, first in ((0, big, base + 1, 0), (big, self._ranked, base, extra)):
            if hi > lo:
                self._groups.append((lo, hi, m, first))
                self._slices[m] = _TweakedFeistel(m * layout.batch_size, key)

    def __repr__(self) -> str:
        return f"WindowedOrder({self.layout!r}, seed={self.seed}, epoch={self.epoch})"

    def index(self, positions: np.ndarray | list[int] | range) -> np.ndarray:
        """Record indices at ``positions`` (any shape), as int64."""
        array = _as_positions(positions, self.n, "position")
        flat = array.astype(np.int64, copy=False).ravel()
        out = np.empty(flat.size, dtype=np.int64)
        for lo in range(0, flat.size, _CHUNK):
            out[lo : lo + _CHUNK] = self._records(self._slots(flat[lo : lo + _CHUNK]))
        return out.reshape(array.shape)

    def position(self, indices: np.ndarray | list[int] | range) -> np.ndarray:
        """Positions of record ``indices`` (any shape), as int64: the inverse of ``index``."""
        array = _as_positions(indices, self.n, "record index")
        flat = array.astype(np.int64, copy=False).ravel()
        out = np.empty(flat.size, dtype=np.int64)
        for lo in range(0, flat.size, _CHUNK):
            out[lo : lo + _CHUNK] = self._positions(self._slots_of(flat[lo : lo + _CHUNK]))
        return out.reshape(array.shape)

    # -- positions <-> block-order slots ------------------------------------------------

    def _pieces(self, p: np.ndarray) -> Iterator[tuple[Any, tuple[int, int, int, int] | None]]:
        """Yield ``(selector, group)`` covering ``p``: ``group`` None for the final batch.

        The selector is a slice when one part covers all of ``p`` (the common case: a
        rank's block of batches in windows of one size), else a boolean mask.
        """
        lo, hi = int(p.min()), int(p.max())
        parts: list[tuple[int, int, tuple[int, int, int, int] | None]] = [
            (group[0], group[1], group) for group in self._groups
        ]
        parts.append((self._ranked, self.n, None))
        for g0, g1, group in parts:
            if hi < g0 or lo >= g1:
                continue
            if g0 <= lo and hi < g1:
                yield slice(None), group
                return
            yield (p >= g0) & (p < g1), group

    def _slots(self, p: np.ndarray) -> np.ndarray:
        q = np.empty_like(p)
        if not p.size:
            return q
        layout = self.layout
        g, bsz, w_size = layout.global_batch_size, layout.batch_size, layout.world_size
        for sel, group in self._pieces(p):
            x = p[sel]
            if group is None:
                assert self._final is not None
                q[sel] = self._ranked + self._final.index(x - self._ranked)
                continue
            g0, _, m, first = group
            span, slice_len = m * g, m * bsz
            rel = x - g0
            wl = rel // span
            offset = rel - wl * span
            j = offset // g
            rem = offset - j * g
            r = rem // bsz
            t = j * bsz + (rem - r * bsz)
            tweaks = self._tweaks(first + wl, r, w_size)
            t2 = self._slices[m].apply(t.astype(np.uint64), tweaks, inverse=False)
            q[sel] = g0 + wl * span + r * slice_len + t2.astype(np.int64)
        return q

    def _positions(self, q: np.ndarray) -> np.ndarray:
        p = np.empty_like(q)
        if not q.size:
            return p
        layout = self.layout
        g, bsz, w_size = layout.global_batch_size, layout.batch_size, layout.world_size
        for sel, group in self._pieces(q):
            x = q[sel]
            if group is None:
                assert self._final is not None
                p[sel] = self._ranked + self._final.position(x - self._ranked)
                continue
            g0, _, m, first = group
            span, slice_len = m * g, m * bsz
            rel = x - g0
            wl = rel // span
            offset = rel - wl * span
            r = offset // slice_len
            t2 = offset - r * slice_len
            tweaks = self._tweaks(first + wl, r, w_size)
            t = self._slices[m].apply(t2.astype(np.uint64), tweaks, inverse=True).astype(np.int64)
            j = t // bsz
            p[sel] = g0 + wl * span + j * g + r * bsz + (t - j * bsz)
        return p

    def _tweaks(self, windows: np.ndarray, ranks: np.ndarray, world_size: int) -> np.ndarray:
        """Each (window, rank) slice's own tweak of the slice bijection's round keys."""
        slices = windows * world_size + ranks
        lo, hi = int(slices.min()), int(slices.max())
        if 2 * (hi - lo + 1) <= slices.size:
            # a call covers few slices (a rank's batches of a few windows): mix each once
            table = _mix(np.arange(lo, hi + 1, dtype=np.uint64) ^ self._tweak_key)
            return table[slices - lo]
        return _mix(slices.astype(np.uint64) ^ self._tweak_key)

    # -- block-order slots <-> records ------------------------------------------------------

    def _block_index(self, k: np.ndarray) -> np.ndarray:
        """``perm(k)`` for block ids ``k``; a span of consecutive ids is permuted once when
        that is fewer ids (a rank's window slices span about ``W/b`` ids per index)."""
        assert self._blocks is not None
        lo, hi = int(k.min()), int(k.max())
        if 2 * (hi - lo + 1) <= k.size:
            return self._blocks.index(np.arange(lo, hi + 1, dtype=np.int64))[k - lo]
        return self._blocks.index(k)

    def _records(self, q: np.ndarray) -> np.ndarray:
        b = self.layout.block_records
        limit = self._full_blocks * b
        if not q.size or self._blocks is None:
            return q
        if int(q.max()) < limit:
            k = q // b
            return self._block_index(k) * b + (q - k * b)
        out = q.copy()
        inside = np.flatnonzero(q < limit)
        if inside.size:
            qi = q[inside]
            k = qi // b
            out[inside] = self._block_index(k) * b + (qi - k * b)
        return out

    def _slots_of(self, records: np.ndarray) -> np.ndarray:
        b = self.layout.block_records
        limit = self._full_blocks * b
        out = records.copy()
        inside = np.flatnonzero(records < limit)
        if inside.size:
            assert self._blocks is not None
            ri = records[inside]
            k = ri // b
            out[inside] = self._blocks.position(k) * b + (ri - k * b)
        return out

    # -- what a window reads ------------------------------------------------------------------

    def ranges(
        self,
        window: int,
        *,
        ranks: Iterable[int],
        final: bool = False,
        first: np.ndarray | None = None,
    ) -> np.ndarray:
        """Record ranges that layout ``ranks`` read in ``window``, and the final batch's.

        Args:
            window: the window's index within the epoch.
            ranks: layout ranks whose window slices to include.
            final: also include the epoch's final partial global batch (last window only).
            first: positions of the batch that will be read first (after a resume, the
                batch it resumes at); defaults to each rank's first batch of the window.

        Returns:
            int64 array ``(k, 2)`` of ``[start, stop)`` record ranges, each inside one
            block: per rank, the blocks the first batch reads (in the order it reads
            them), then its other blocks; the final batch's blocks last.
        """
        layout = self.layout
        start, ranked_stop, stop = layout.window_bounds(window)
        bsz = layout.batch_size
        slice_len = (ranked_stop - start) // layout.world_size
        parts = []
        for rank in sorted(set(ranks)):
            if not 0 <= rank < layout.world_size:
                raise OutOfRangeError(
                    f"rank {rank} is out of range for world_size {layout.world_size}"
                )
            if not slice_len:
                continue
            lo = start + rank * slice_len
            pieces = self._slot_ranges(lo, lo + slice_len)
            # the first batch's slots in this slice, hence the pieces it reads, in order
            lead = start + rank * bsz + np.arange(bsz, dtype=np.int64) if first is None else first
            slots = self._slots(np.asarray(lead, dtype=np.int64))
            slots = slots[(slots >= lo) & (slots < lo + slice_len)]
            touched = slots // layout.block_records - lo // layout.block_records
            _, at = np.unique(touched, return_index=True)
            head = touched[np.sort(at)]
            tail = np.setdiff1d(np.arange(len(pieces)), head, assume_unique=True)
            parts.append(pieces[np.concatenate([head, tail])])
        if final and stop > ranked_stop:
            parts.append(self._slot_ranges(ranked_stop, stop))
        if not parts:
            return np.empty((0, 2), dtype=np.int64)
        return np.concatenate(parts)

    def _slot_ranges(self, lo: int, hi: int) -> np.ndarray:
        """Record ranges of block-order slots ``[lo, hi)``, one per block, in slot order."""
        b = self.layout.block_records
        ks = np.arange(lo // b, (hi - 1) // b + 1, dtype=np.int64)
        first = np.maximum(lo, ks * b)
        length = np.minimum(hi, (ks + 1) * b) - first
        records = first.copy()
        inside = ks < self._full_blocks
        if inside.any():
            assert self._blocks is not None
            ki = ks[inside]
            records[inside] = self._blocks.index(ki) * b + (first[inside] - ki * b)
        return np.stack([records, records + length], axis=1)


class WindowFeed:
    """Tells a :class:`WindowedSource` which windows one rank's batch requests enter.

    Lives in the loader's main process: :meth:`before` is called with each batch's
    positions before its request is handed out. When a batch enters a window, the window
    (if not yet) and the next one are scheduled, and window ids two behind are retired.
    The ranges scheduled are the slices of every layout rank this rank's plan touches in
    the window (its own slice alone when the plan's topology is the layout's) and the final
    batch's when the plan reads it, so they always cover what the batches then read.

    Args:
        source: the windowed source.
        order: the epoch's windowed order.
        plan: this rank's plan for the pass.
        ids: the loader's window-id counter (ids increase across passes and epochs).
    """

    def __init__(self, source: Any, order: WindowedOrder, plan: Plan, ids: Iterator[int]) -> None:
        self.source = source
        self.order = order
        self.plan = plan
        self._layout = order.layout
        self._ids = ids
        self._window_ids: dict[int, int] = {}
        self._current = -1  # the last window begun
        self._retired = -1  # the last window id retired
        self._lo = self._hi = 0  # positions of the current window

    def before(self, positions: np.ndarray) -> None:
        """Schedule/retire as needed before a batch of ``positions`` (ascending) is requested."""
        lo, hi = int(positions[0]), int(positions[-1])
        if self._lo <= lo and hi < self._hi:
            return
        first, last = self._layout.window_at(lo), self._layout.window_at(hi)
        for window in range(max(first, self._current + 1), last + 1):
            ident = self._schedule(window, force=True, lead=positions)
            if window + 1 < self._layout.num_windows:
                self._schedule(window + 1, force=False)
            # ids two behind are done, but never one this batch still reads (a batch that
            # spans more than two windows, after a resume with a much larger batch)
            limit = min(ident - 2, self._window_ids.get(first, ident) - 1)
            if limit > self._retired:
                self.source.retire(window=limit)
                self._retired = limit
            self._current = window
        self._lo, _, self._hi = self._layout.window_bounds(self._current)

    def _schedule(self, window: int, *, force: bool, lead: np.ndarray | None = None) -> int:
        if window in self._window_ids:
            return self._window_ids[window]
        ranks, final = self.touched(window)
        if not (ranks or final) and not force:
            return -1
        ident = self._window_ids[window] = next(self._ids)
        # a window begun by a batch fetches that batch's blocks first (after a resume mid
        # window, the batch it resumes at), so the first batch waits for the fewest
        ranges = self.order.ranges(window, ranks=ranks, final=final, first=lead)
        if len(ranges):
            self.source.schedule(ranges, window=ident)
        return ident

    def touched(self, window: int) -> tuple[list[int], bool]:
        """Layout ranks whose slices this rank's plan reads in ``window``, and whether it
        reads the final batch there."""
        layout, plan = self._layout, self.plan
        start, ranked_stop, stop = layout.window_bounds(window)
        g, bsz = layout.global_batch_size, layout.batch_size
        step, size = plan.global_batch_size, plan.batch_size
        base = plan.start + plan.rank * size
        k_lo = max(0, (start - base - size) // step + 1)
        k_hi = min(plan.full_batches - 1, (stop - base - 1) // step)
        first = base + step * np.arange(k_lo, max(k_lo, k_hi + 1), dtype=np.int64)
        runs = [np.stack([first, first + size], axis=1)]
        for k in range(plan.full_batches, len(plan)):  # the final partial batch, if any
            positions = plan.positions(k)
            runs.append(np.array([[positions[0], positions[-1] + 1]], dtype=np.int64))
        run = np.concatenate(runs)
        final = bool(np.any(np.minimum(run[:, 1], stop) > np.maximum(run[:, 0], ranked_stop)))
        a = np.maximum(run[:, 0], start) - start
        e = np.minimum(run[:, 1], ranked_stop) - start
        keep = e > a
        a, e = a[keep], e[keep]
        marks = np.zeros(layout.world_size + 1, dtype=np.int64)
        if np.any(e - a >= g):
            marks[0] += 1
        else:
            r1, r2 = (a % g) // bsz, ((e - 1) % g) // bsz
            wraps = a // g != (e - 1) // g
            # ranks r1..r2 of one global batch, or r1..W-1 and 0..r2 across two
            np.add.at(marks, r1, 1)
            np.add.at(marks, r2 + 1, -1)
            marks[0] += int(wraps.sum())
        ranks = np.flatnonzero(np.cumsum(marks)[: layout.world_size] > 0).tolist()
        return ranks, final


class _Ids:
    """Window ids: 0, 1, 2, ... (a plain class, so a loader that holds one still pickles)."""

    def __init__(self) -> None:
        self._next = 0

    def __iter__(self) -> _Ids:
        return self

    def __next__(self) -> int:
        self._next += 1
        return self._next - 1


class EpochWindows:
    """The loader's windowed-order bookkeeping: each epoch's layout, its state and log line.

    The layout of an epoch is chosen once, when the epoch is first needed, from the source's
    :class:`ReadHint` and the topology at that time; a loaded state fixes the layout of the
    epoch it was taken in (the elastic-resume rule in the module docstring).
    """

    def __init__(self) -> None:
        self._epoch: int | None = None  # the epoch _layout belongs to
        self._layout: WindowLayout | None = None
        self._hint: ReadHint | None = None
        self.ids: Iterator[int] = _Ids()

    def layout(
        self,
        source: Any,
        *,
        epoch: int,
        usable: bool,
        num_records: int,
        batch_size: int,
        world_size: int,
    ) -> WindowLayout | None:
        """The layout of ``epoch``; None for the plain order (no hint, or not ``usable``)."""
        if self._epoch != epoch:
            self._layout = None
            hint = read_hint(source) if usable else None
            if hint is not None:
                self._layout = choose_layout(
                    hint, num_records=num_records, batch_size=batch_size, world_size=world_size
                )
                log.info("epochal: epoch %d uses a %s", epoch, describe_layout(self._layout, hint))
            self._hint = hint
            self._epoch = epoch
        return self._layout

    def describe(self) -> str | None:
        """The current layout's line (None for the plain order)."""
        return None if self._layout is None else describe_layout(self._layout, self._hint)

    def state(self) -> dict[str, int] | None:
        """The current epoch's layout for the loader state (None for the plain order)."""
        return None if self._layout is None else self._layout.as_dict()

    def load(self, value: Any, *, epoch: int, num_records: int, usable: bool) -> None:
        """Fix ``epoch``'s layout to a state's ``"windows"`` value.

        Raises:
            StateError: the value is not a layout of ``num_records`` records, or the loader
                cannot use a windowed order (shuffle off, or a sampler).
        """
        layout = None
        if value is not None:
            try:
                layout = WindowLayout.from_dict(value)
            except Error as error:
                raise StateError(f"Loader state has an invalid 'windows' layout: {error}") from None
            if layout.num_records != num_records:
                raise StateError(
                    f"Loader state's windows layout covers {layout.num_records} records but "
                    f"this loader has {num_records}"
                )
            if not usable:
                raise StateError(
                    "Loader state was taken with a windowed order, which needs shuffle=True "
                    "and no sampler; this loader has shuffle=False or a sampler"
                )
        self._epoch, self._layout = epoch, layout
