"""Windowed order: a shuffle that reads a store larger than its cache one window at a time.

A global shuffle touches every shard of a store in its first batches, so a cache smaller
than the store thrashes, and W ranks each download the whole store. The windowed order
reads the epoch in windows that fit the cache, gives each rank a window slice of its own
blocks, and still mixes batches like a global shuffle, also on a store written in label
order. It is an :class:`epochal.order.Order`: a pure function of (seed, epoch, position),
O(1) memory, exact for every ``n``, so resume stays O(1).

Geometry (a :class:`WindowLayout` of ``n`` records, block size ``b``, window bound ``S``,
and the world size ``W`` and batch size ``B`` it was made for; ``G = B * W``):

- Blocks are ranges of ``b`` consecutive *block records*: block ``k`` is ``[k*b, (k+1)*b)``.
  A keyed bijection (:class:`epochal.order.ShuffledOrder` under its own salt) permutes the
  ``n // b`` full blocks into the *block order*; the ``n % b`` tail records come last, as
  they are. Block-order slot ``q`` holds block record ``perm(q // b) * b + q % b`` (or
  ``q`` in the tail): O(1).
- Block records are the source's records, unless the source reads in *segments* (a store:
  its shards, whose fetch units restart at every shard start). Then block records first
  list every segment's whole blocks (``b`` records from the segment's start, ``2b``, ...),
  segment by segment, then every segment's remainder (fewer than ``b`` records), so a
  whole block never straddles a segment and, ``b`` being a multiple of the source's fetch
  unit, never straddles a unit either: each unit is read in one window (or two consecutive
  ones) instead of two windows far apart, i.e. downloaded once per epoch instead of about
  twice. Only blocks made of remainders still straddle units. The map costs a
  search in a table of the segment starts (which the source holds anyway): O(1) in records,
  O(log segments) per index. The layout records a digest of the starts
  (``WindowLayout.segments``), and states of layouts without it keep the unsegmented order.
- Layouts with ``strata = K`` (every layout :func:`choose_layout` makes) draw the block
  order *stratified* (:class:`_StratifiedBlocks`): the ``n // b`` full blocks are cut into
  ``K`` strata of consecutive blocks, and block-order slots ``[r*K, (r+1)*K)`` hold one
  keyed-random block of every stratum (a keyed bijection per stratum; the remainder of
  ``(n // b) % K`` blocks forms a last, short row). ``K`` is the number of blocks in a
  rank's slice of the smallest window, so every rank's window slice holds a block from
  every part of the store: on a store written in label order each window covers the whole
  label range, and a window's label histogram is close to the store's instead of a random
  draw of ``K`` blocks. Still a bijection, O(1) per index. Layouts without ``strata``
  (states saved before it existed) keep the unstratified block order above.
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
(``WindowLayout.mixing_factor``; the loader logs it). A stratified block order varies less
(every window holds a block of every stratum): ``K >= B`` blocks suffice, measured within
1.17x on label-ordered stores of 10 to 3000 classes, so blocks are twice as large.

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

import dataclasses
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from epochal._errors import Error, OutOfRangeError, StateError
from epochal._keys import check_seed_epoch as _check_seed_epoch
from epochal._keys import round_hash as _hash
from epochal._keys import round_keys, splitmix64, splitmix64_array, window_keys
from epochal.order import _CHUNK, _ROUNDS, MAX_RECORDS, Order, ShuffledOrder, _as_positions
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
    "segment_starts",
    "segments_digest",
]

log = logging.getLogger("epochal")

WINDOWS_IN_CACHE = 3  # the window being read, the next one prefetched, the one in flight
BLOCKS_PER_BATCH = 2  # the unstratified rule (K >= 2B: mixing <= sqrt(1.5)x), for reference
# with stratified blocks: K = B mixes within 1.17x on label-ordered stores of 10..3000
# classes (benchmarks/bench_windows.py; unstratified K = 2B: 1.01..1.23x), so blocks twice
# as large, half the requests
STRATIFIED_BLOCKS_PER_BATCH = 1
_STRATA_SALT = 0x5EED_B10C_57A7_A000  # keys the stratified block order apart from the others
MIXING_GOAL = 1.25  # describe_layout says when a layout mixes worse than this
_MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ReadHint:
    """What a source that reads remotely tells the loader, so it can pick a window layout.

    Attributes:
        record_bytes: mean stored bytes per record (all columns).
        cache_bytes: the cache bound in bytes.
        min_block_records: the smallest record range the source can fetch and verify as
            one unit; blocks are multiples of it.
        reserved_bytes: bytes of the cache held throughout, whatever the window (a remote
            store's shard heads: every window reads blocks of every shard); windows get
            ``cache_bytes - reserved_bytes``.
    """

    record_bytes: float
    cache_bytes: int
    min_block_records: int
    reserved_bytes: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.record_bytes, (int, float)) and self.record_bytes > 0):
            raise Error(f"ReadHint.record_bytes must be a number > 0, got {self.record_bytes!r}")
        for name in ("cache_bytes", "min_block_records"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Error(f"ReadHint.{name} must be an integer >= 1, got {value!r}")
        value = self.reserved_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Error(f"ReadHint.reserved_bytes must be an integer >= 0, got {value!r}")


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

    # Optional: ``segment_starts() -> np.ndarray | None``, the record starts of the segments
    # the source fetches from (its shards) and ``n`` last, when its fetch units restart at
    # every segment start; blocks are then aligned to them (see the module docstring).


_HEX16 = re.compile(r"[0-9a-f]{16}")
_LAYOUT_FIELDS = ("num_records", "block_records", "window_records", "world_size", "batch_size")
_OPTIONAL_FIELDS = ("segments", "strata")


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
        segments: digest (:func:`segments_digest`) of the source's segment starts when
            blocks are aligned to segments (see the module docstring); None when block
            records are the source's records.
        strata: ``K``, the strata the block order draws each run of ``K`` blocks from
            (see the module docstring); None for the unstratified block order of layouts
            made before strata existed (their states keep their order).
    """

    num_records: int
    block_records: int
    window_records: int
    world_size: int
    batch_size: int
    segments: str | None = None
    strata: int | None = None

    def __post_init__(self) -> None:
        for name in _LAYOUT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Error(f"WindowLayout.{name} must be an integer >= 1, got {value!r}")
        if self.strata is not None and (
            isinstance(self.strata, bool) or not isinstance(self.strata, int) or self.strata < 1
        ):
            raise Error(f"WindowLayout.strata must be None or an integer >= 1, got {self.strata!r}")
        if self.segments is not None and not (
            isinstance(self.segments, str) and _HEX16.fullmatch(self.segments)
        ):
            raise Error(
                f"WindowLayout.segments must be None or 16 lowercase hex digits (a digest of the "
                f"segment starts), got {self.segments!r}"
            )
        if self.num_records > MAX_RECORDS:
            raise Error(f"WindowLayout.num_records must be <= 2**62, got {self.num_records}")
        if self.window_records % self.global_batch_size:
            raise Error(
                f"WindowLayout.window_records={self.window_records} must be a multiple of the "
                f"global batch {self.global_batch_size} (batch_size {self.batch_size} x "
                f"world_size {self.world_size})"
            )

    def as_dict(self) -> dict[str, Any]:
        """The layout as a plain JSON-able dict (``"segments"`` and ``"strata"`` only when
        set, so older layouts give the same dict as before those existed)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _LAYOUT_FIELDS}
        for name in _OPTIONAL_FIELDS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> WindowLayout:
        """The layout :meth:`as_dict` gave.

        Raises:
            Error: ``value`` is not a dict of exactly the layout's fields, or they are invalid.
        """
        if not isinstance(value, Mapping) or set(value) - set(_OPTIONAL_FIELDS) != set(
            _LAYOUT_FIELDS
        ):
            got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise Error(
                f"a window layout needs exactly the keys {list(_LAYOUT_FIELDS)} (and optionally "
                f"{list(_OPTIONAL_FIELDS)}), got {got}"
            )
        names = (*_LAYOUT_FIELDS, *_OPTIONAL_FIELDS)
        return cls(**{name: value[name] for name in names if name in value})

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
        global shuffle's, ``sqrt(1 + B/K)`` for a store written in label order, or
        ``sqrt(1 + B/(2K))`` with ``strata`` (a stratified draw of blocks varies less than a
        random one: measured on label-ordered stores of 10 to 3000 classes, within 1.17x
        at ``K = B`` where the formula says 1.22x)."""
        halve = 2 if self.strata else 1
        return math.sqrt(1 + self.batch_size / (halve * max(self.slice_blocks, 1e-9)))


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

    A rank's window slice gets ``(cache_bytes - reserved_bytes) / (3 * LOCAL_WORLD_SIZE)``
    bytes (a whole number of batches); the block size is the largest multiple of the source's fetch unit
    that leaves ``K >= 2 * batch_size`` blocks in each rank's slice of the smallest window
    (see the module docstring), and at least one fetch unit.

    Raises:
        Error: the cache cannot hold three windows of one batch (and one fetch unit) per
            rank that shares it; the message gives the smallest cache_size that can.
    """
    sharing = _ranks_sharing_cache()
    unit = hint.min_block_records
    room = max(0, hint.cache_bytes - hint.reserved_bytes)  # for the windows
    per_rank = int(room / (WINDOWS_IN_CACHE * sharing) // hint.record_bytes)
    per_rank -= per_rank % batch_size
    need = max(batch_size, -(-unit // batch_size) * batch_size)
    if per_rank < need:
        least = hint.reserved_bytes + math.ceil(
            WINDOWS_IN_CACHE * sharing * need * hint.record_bytes
        )
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
    block = max(unit, smallest // (STRATIFIED_BLOCKS_PER_BATCH * batch_size) // unit * unit)
    # one stratum per block of a rank's smallest window slice: each slice then draws one
    # block from every part of the store (see the module docstring)
    strata = max(1, smallest // block)
    return WindowLayout(**{**layout.as_dict(), "block_records": block, "strata": strata})


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


def segment_starts(source: Any, num_records: int) -> np.ndarray | None:
    """The source's segment starts (``[0, ..., num_records]``), or None when it has none.

    Raises:
        Error: the source's starts are not ascending from 0 to ``num_records``.
    """
    method = getattr(source, "segment_starts", None)
    if not callable(method):
        return None
    value = method()
    return None if value is None else _check_starts(value, num_records)


def _check_starts(value: Any, num_records: int) -> np.ndarray:
    starts = np.asarray(value)
    if (
        starts.ndim != 1
        or len(starts) < 2
        or starts.dtype.kind not in "iu"
        or int(starts[0]) != 0
        or int(starts[-1]) != num_records
        or np.any(np.diff(starts) < 0)
    ):
        raise Error(
            f"segment starts must be ascending integers from 0 to num_records={num_records}, "
            f"got {value!r}"
        )
    return starts.astype(np.int64)


def segments_digest(starts: np.ndarray) -> str:
    """16 hex digits identifying segment starts (kept in :attr:`WindowLayout.segments`)."""
    raw = np.ascontiguousarray(starts, dtype="<i8").tobytes()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


class _Segments:
    """Block records <-> records when blocks are aligned to segments (module docstring).

    Block records ``[0, split)`` are the segments' whole blocks, segment by segment; block
    records ``[split, n)`` the segments' remainders, segment by segment.
    """

    def __init__(self, starts: np.ndarray, b: int) -> None:
        counts = np.diff(starts)
        whole = counts // b
        self.b = b
        self.starts = starts
        self.head = whole * b  # records of each segment in whole blocks
        self.block_base = np.concatenate([[0], np.cumsum(whole)]).astype(np.int64)
        self.rest_base = np.concatenate([[0], np.cumsum(counts - self.head)]).astype(np.int64)
        self.split = int(self.block_base[-1]) * b

    @staticmethod
    def is_identity(starts: np.ndarray, b: int) -> bool:
        """True when every segment but the last non-empty one holds whole blocks: then the
        map is the identity and the unsegmented order is the same order."""
        counts = np.diff(starts)
        filled = np.flatnonzero(counts)
        return not filled.size or not np.any(counts[: filled[-1]] % b)

    def records(self, v: np.ndarray) -> np.ndarray:
        """Records of block records ``v``."""
        low = v < self.split
        if low.all():
            return self._whole(v)
        out = np.empty_like(v)
        out[low] = self._whole(v[low])
        high = ~low
        t = v[high] - self.split
        s = np.searchsorted(self.rest_base, t, side="right") - 1
        out[high] = self.starts[s] + self.head[s] + (t - self.rest_base[s])
        return out

    def _whole(self, v: np.ndarray) -> np.ndarray:
        b = self.b
        k = v // b
        s = np.searchsorted(self.block_base, k, side="right") - 1
        return self.starts[s] + (k - self.block_base[s]) * b + (v - k * b)

    def block_records(self, records: np.ndarray) -> np.ndarray:
        """Block records of ``records`` (the inverse of :meth:`records`)."""
        s = np.searchsorted(self.starts, records, side="right") - 1
        o = records - self.starts[s]
        return np.where(
            o < self.head[s],
            self.block_base[s] * self.b + o,
            self.split + self.rest_base[s] + (o - self.head[s]),
        )

    def ranges(self, ranges: np.ndarray) -> np.ndarray:
        """Record ranges of block-record ranges (each inside one block), in the same order;
        a range over remainders becomes one range per segment it covers."""
        if not len(ranges):
            return ranges
        lo, hi = ranges[:, 0], ranges[:, 1]
        low = lo < self.split
        # segments each range covers: one for a whole block, s0..s1 for remainders
        s0 = np.empty_like(lo)
        s1 = np.empty_like(lo)
        s0[low] = s1[low] = np.searchsorted(self.block_base, lo[low] // self.b, side="right") - 1
        t0, t1 = lo[~low] - self.split, hi[~low] - self.split
        s0[~low] = np.searchsorted(self.rest_base, t0, side="right") - 1
        s1[~low] = np.searchsorted(self.rest_base, t1 - 1, side="right") - 1
        count = s1 - s0 + 1
        row = np.repeat(np.arange(len(lo)), count)
        seg = s0[row] + (np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count))
        first = np.empty(len(row), dtype=np.int64)
        length = np.empty(len(row), dtype=np.int64)
        whole = low[row]
        first[whole] = self._whole(lo[row[whole]])
        length[whole] = (hi - lo)[row[whole]]
        rest = ~whole
        base = self.rest_base[seg[rest]]
        a = np.maximum(lo[row[rest]] - self.split, base)
        e = np.minimum(hi[row[rest]] - self.split, self.rest_base[seg[rest] + 1])
        first[rest] = self.starts[seg[rest]] + self.head[seg[rest]] + (a - base)
        length[rest] = e - a
        keep = length > 0
        first, length = first[keep], length[keep]
        return np.stack([first, first + length], axis=1)


def describe_layout(layout: WindowLayout, hint: ReadHint | None = None) -> str:
    """One line saying what a layout reads: blocks, windows and the mixing it promises."""
    b, s = layout.block_records, layout.window_records
    per_rank = s // layout.world_size

    def size(records: int) -> str:
        return "" if hint is None else f" (~{records * hint.record_bytes / _MIB:.2f} MiB)"

    return (
        f"windowed order: blocks of {b} records{size(b)}, windows of up to {s} records, "
        f"{per_rank} per rank{size(per_rank)}, {layout.num_windows} windows per epoch, "
        f"{'blocks aligned to the source segments, ' if layout.segments else ''}"
        f"{f'blocks drawn from {layout.strata} strata, ' if layout.strata else ''}"
        f"made for world_size {layout.world_size} x batch_size {layout.batch_size}; expected "
        f"batch mixing {layout.mixing_factor:.2f}x a global shuffle's"
    ) + (
        ""
        if layout.mixing_factor <= MIXING_GOAL
        else f" (above the {MIXING_GOAL}x goal: a rank's window holds only "
        f"{layout.slice_blocks:.0f} blocks for batches of {layout.batch_size}, too few for "
        f"this store at this cache size; a larger cache_size or a smaller batch_size mixes better)"
    )


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
        self._keys = round_keys(key, _ROUNDS)

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


class _StratifiedBlocks:
    """The stratified block order: a keyed bijection of ``[0, N)`` block ids (module docstring).

    The blocks are cut into ``K`` strata of consecutive ids (the first ``N % K`` one block
    longer). Slot ``s = r*K + j`` (row ``r``, column ``j``) holds block ``sigma_j(r)`` of
    stratum ``j``, ``sigma_j`` a keyed bijection of the stratum (one :class:`_TweakedFeistel`
    per stratum length, tweaked by ``j``); the ``N % K`` slots of the last, short row take
    the long strata's last rows. So every ``K`` consecutive slots hold one block of every
    stratum: a window slice of ``K`` blocks covers the whole store, also in label order.
    Same interface as :class:`epochal.order.ShuffledOrder` (``index`` / ``position``).
    """

    def __init__(self, blocks: int, strata: int, key: int) -> None:
        self.k = k = max(1, min(strata, blocks))
        self.rows, self.extra = divmod(blocks, k)  # strata < extra hold rows + 1 blocks
        self._short = _TweakedFeistel(max(1, self.rows), key)
        self._long = _TweakedFeistel(self.rows + 1, key)
        self._tweak_key = np.uint64(splitmix64(key))

    def _tweaks(self, j: np.ndarray) -> np.ndarray:
        return splitmix64_array(j.astype(np.uint64) ^ self._tweak_key)

    def _permute(self, r: np.ndarray, j: np.ndarray, *, inverse: bool) -> np.ndarray:
        """``sigma_j(r)`` (or its inverse) for rows ``r`` within strata ``j``."""
        out = np.empty_like(r)
        long = j < self.extra
        for sel, net in ((long, self._long), (~long, self._short)):
            if sel.any():
                x = r[sel].astype(np.uint64)
                out[sel] = net.apply(x, self._tweaks(j[sel]), inverse=inverse).astype(np.int64)
        return out

    def _start(self, j: np.ndarray) -> np.ndarray:
        return j * self.rows + np.minimum(j, self.extra)

    def index(self, s: np.ndarray) -> np.ndarray:
        """Block ids at slots ``s`` (int64 array)."""
        s = np.asarray(s, dtype=np.int64)
        full = self.rows * self.k
        r = np.where(s < full, s // self.k, self.rows)
        j = np.where(s < full, s % self.k, s - full)
        return self._start(j) + self._permute(r, j, inverse=False)

    def position(self, blocks: np.ndarray) -> np.ndarray:
        """Slots of block ids ``blocks`` (int64 array): the inverse of :meth:`index`."""
        v = np.asarray(blocks, dtype=np.int64)
        split = self.extra * (self.rows + 1)
        j = np.where(v < split, v // (self.rows + 1), self.extra + (v - split) // max(1, self.rows))
        r = self._permute(v - self._start(j), j, inverse=True)
        return np.where(r < self.rows, r * self.k + j, self.rows * self.k + j)


class WindowedOrder(Order):
    """The windowed order of one epoch: a keyed bijection on ``[0, n)`` (module docstring).

    Args:
        layout: the epoch's :class:`WindowLayout`.
        seed: the run's seed, in ``[0, 2**64)``.
        epoch: the epoch, in ``[0, 2**64)``.
        segments: the source's segment starts (:func:`segment_starts`); needed, and
            checked against the digest, when ``layout.segments`` is set; else unused.

    Raises:
        Error: the layout aligns blocks to segments and ``segments`` is missing or not
            the segments it was made for.
    """

    def __init__(
        self,
        layout: WindowLayout,
        *,
        seed: int,
        epoch: int,
        segments: np.ndarray | None = None,
    ) -> None:
        seed, epoch = int(seed), int(epoch)
        _check_seed_epoch(seed, epoch)
        self.layout = layout
        self.seed, self.epoch = seed, epoch
        self.n = n = layout.num_records
        b, g = layout.block_records, layout.global_batch_size
        self._segments: _Segments | None = None
        if layout.segments is not None:
            if segments is None:
                raise Error(
                    f"this window layout aligns blocks to segments (digest {layout.segments}): "
                    f"pass the source's segment starts"
                )
            starts = _check_starts(segments, n)
            if segments_digest(starts) != layout.segments:
                raise Error(
                    f"this window layout was made for segments with digest {layout.segments}, "
                    f"but the segments given have digest {segments_digest(starts)} (the source "
                    f"changed?)"
                )
            self._segments = _Segments(starts, b)
        self._full_blocks = n // b
        self._blocks: ShuffledOrder | _StratifiedBlocks | None = None
        # salted keys (_keys.window_keys) keep the block, window-slice and final-batch
        # bijections unrelated to each other and to the plain order of the same (seed, epoch)
        blocks_seed, final_seed, key = window_keys(seed, epoch)
        if self._full_blocks and layout.strata is not None:
            strata_key = splitmix64(blocks_seed ^ splitmix64(epoch ^ _STRATA_SALT))
            self._blocks = _StratifiedBlocks(self._full_blocks, layout.strata, strata_key)
        elif self._full_blocks:
            self._blocks = ShuffledOrder(self._full_blocks, seed=blocks_seed, epoch=epoch)
        total, _windows, base, extra = layout._cut
        self._ranked = total * g
        self._final = None
        if n > self._ranked:
            self._final = ShuffledOrder(n - self._ranked, seed=final_seed, epoch=epoch)
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
            table = splitmix64_array(np.arange(lo, hi + 1, dtype=np.uint64) ^ self._tweak_key)
            return table[slices - lo]
        return splitmix64_array(slices.astype(np.uint64) ^ self._tweak_key)

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
        v = self._block_records(q)
        return v if self._segments is None or not v.size else self._segments.records(v)

    def _block_records(self, q: np.ndarray) -> np.ndarray:
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
        if self._segments is not None and records.size:
            records = self._segments.block_records(records)
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
            block (and one segment): per rank, the blocks the first batch reads (in the
            order it reads them), then its other blocks; the final batch's blocks last.
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
        out = np.concatenate(parts)
        return out if self._segments is None else self._segments.ranges(out)

    def _slot_ranges(self, lo: int, hi: int) -> np.ndarray:
        """Block-record ranges of block-order slots ``[lo, hi)``, one per block, in slot order."""
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
        self._starts: np.ndarray | None = None  # the source's segment starts, once asked
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
                layout = choose_layout(
                    hint, num_records=num_records, batch_size=batch_size, world_size=world_size
                )
                starts = segment_starts(source, num_records)
                if starts is not None and not _Segments.is_identity(starts, layout.block_records):
                    layout = dataclasses.replace(layout, segments=segments_digest(starts))
                    self._starts = starts
                self._layout = layout
                log.info("epochal: epoch %d uses a %s", epoch, describe_layout(layout, hint))
            self._hint = hint
            self._epoch = epoch
        return self._layout

    def order(self, source: Any, layout: WindowLayout, *, seed: int, epoch: int) -> WindowedOrder:
        """The windowed order of ``layout``, with the source's segments when it uses them.

        Raises:
            StateError: the layout (from a loaded state) aligns blocks to segments that
                this source does not have.
        """
        starts = None
        if layout.segments is not None:
            starts = self._starts
            if starts is None or segments_digest(starts) != layout.segments:
                starts = self._starts = segment_starts(source, layout.num_records)
            if starts is None or segments_digest(starts) != layout.segments:
                got = "none" if starts is None else f"digest {segments_digest(starts)}"
                raise StateError(
                    f"Loader state's windows layout aligns blocks to segments with digest "
                    f"{layout.segments}, but this source's segments have {got}: it is not the "
                    f"source the state was taken with"
                )
        return WindowedOrder(layout, seed=seed, epoch=epoch, segments=starts)

    def describe(self) -> str | None:
        """The current layout's line (None for the plain order)."""
        return None if self._layout is None else describe_layout(self._layout, self._hint)

    def state(self) -> dict[str, Any] | None:
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
