"""Mixtures: records from several sources in fixed proportions, exactly resumable.

``epochal.mix({a: 0.7, b: 0.3})`` is a Source (the sources end to end, as
:func:`epochal.concat`) that carries a :class:`MixtureSampler`; a Loader over it draws
positions from the sources in the given proportions. Everything is a function of
``(seed, epoch, position)``:

1. **Which source** fills position ``p`` comes from a fixed schedule, periodic with period
   ``D``: the proportions are made rational, ``c_i / D`` (exact when the weights are
   ratios with a common denominator of at most 65,536, e.g. ``0.7/0.3`` gives
   ``D = 10``; otherwise rounded to ``D = 65,536`` by largest remainder, see
   :attr:`Mixture.proportions`), and the slots of one period are scheduled by
   earliest deadline first over Tijdeman's windows (the "chairman assignment problem").
   That guarantees, for every prefix of ``P`` positions of an epoch, that source ``i``
   has supplied ``N_i(P)`` records with ``|N_i(P) - w_i P| <= 1 - 1/(2k - 2)`` for ``k``
   sources: ``N_i(P)`` is ``w_i P`` rounded down or up. Consequences:

   - a global batch of ``G`` positions starting at a multiple of ``G`` holds exactly
     ``w_i G`` records of source ``i`` whenever every ``w_i G`` is a whole number
     (``G = 10, 20, ..., 250`` for ``0.7/0.3``); otherwise each count is within 2 of
     ``w_i G`` (within 1 for two sources, since the two deviations then cancel);
   - each rank's slice is itself a window of positions, so ranks get the proportions too.

   The schedule does not depend on the batch size or the world size, so a resume on
   another topology (elastic) neither repeats nor skips a record (P5).

2. **Which record** of source ``i``: its ``j``-th draw of the epoch (``j`` is known in
   closed form from ``p`` and the schedule) is position ``j mod n_i`` of cycle
   ``j // n_i`` of that source's own keyed order (a fresh global shuffle per epoch and
   per cycle; the identity with ``shuffle=False``).

Exhaustion policy (when a source runs out of records):

- ``"stop"`` (default; Hugging Face's ``first_exhausted``): the epoch ends just before a
  source would have to repeat a record. Every record appears at most once per epoch;
  larger sources are partly seen in each epoch, a different part every epoch.
- ``"restart"`` (``all_exhausted``): a source that runs out starts a new cycle with a new
  shuffle, and the epoch ends once every source has delivered each of its records at
  least once; smaller sources repeat within the epoch.

``samples_per_epoch`` fixes the epoch length instead (with ``"restart"``: any length;
with ``"stop"``: at most the stopping length). The proportions hold at every position
under both policies; no policy rebalances.

Token mixtures: a mix of :func:`epochal.tokens` sources of one ``seq_len`` weighs tokens
(every window holds ``seq_len + 1`` of them), so ``mix({web: 0.7, code: 0.3})`` gives
70% of the tokens of every global batch from ``web`` to within one window per source;
each source's windows move with the epoch as they do alone (``for_epoch``).

Records come with the Loader's ``with_index=True`` as ``_index``, an index into the
mixture (the concatenation); :meth:`Mixture.locate` turns those into (source number,
record index in that source). Per-sample randomness is keyed by that mixture index.

Cost: O(D) memory and a one-off O(D k) schedule when the mixture is built (~70 ms at
``D = 65,536``); per position O(1) (a table lookup and the source's keyed order);
O(1) resume. A batch is read in a single gather, in position order, when the sources
are :func:`epochal.split` parts of one parent, ``from_arrays`` sources with matching
columns, or local stores with fixed-size columns (see ``sources/_joined.py``); otherwise
each source's records are gathered and assembled in position order (one extra copy).
In ``benchmarks/bench_sampling.py`` the mixture itself costs 0-10% of a plain shuffled
Loader over the same sources.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from epochal._apportion import largest_remainder
from epochal._errors import Error
from epochal._keys import M64, mixture_keys
from epochal.order import Order, ShuffledOrder, _as_positions
from epochal.sampling import Sampler, check_positions
from epochal.sources._views import ConcatSource

__all__ = ["EXHAUSTION_POLICIES", "MAX_PERIOD", "Mixture", "MixtureSampler", "mix"]

MAX_PERIOD = 1 << 16  # longest schedule period; finer proportions are rounded to 1/65,536
EXHAUSTION_POLICIES = ("restart", "stop")


def rational_proportions(weights: list[Any]) -> tuple[list[int], int]:
    """``(counts, period)``: the proportions as ``counts[i] / period``, summing to 1.

    Exact when the normalised weights share a denominator of at most :data:`MAX_PERIOD`
    (floats are read as the simplest fraction within 1e-6 of them); otherwise rounded to
    ``period = MAX_PERIOD`` by largest remainder.
    """
    fractions = [
        Fraction(int(w))
        if isinstance(w, (int, np.integer))
        else Fraction(float(w)).limit_denominator(1_000_000)
        for w in weights
    ]
    total = sum(fractions)
    shares = [f / total for f in fractions]
    period = math.lcm(*(s.denominator for s in shares))
    if period <= MAX_PERIOD:
        return [int(s * period) for s in shares], period
    return largest_remainder([float(s) for s in shares], MAX_PERIOD), MAX_PERIOD


def schedule(counts: list[int], period: int) -> np.ndarray:
    """The source of each slot of one period: ``counts[i]`` slots of source ``i``.

    Earliest deadline first over the windows of Tijdeman's chairman assignment theorem:
    draw ``j`` of source ``i`` may take slot ``t`` only when
    ``(j + d) / w_i - 1 <= t <= (j + 1 - d) / w_i`` with ``d = 1 / (2k - 2)``, which keeps
    every prefix count within ``1 - d`` of ``w_i * P``. A schedule inside those windows
    exists (the theorem) and EDF finds one (unit jobs with integer windows), so the
    assertions below are invariants. Integer arithmetic throughout: exact for any period.
    """
    k = len(counts)
    table = np.zeros(period, dtype=np.int64)
    if k == 1:
        return table
    m = 2 * k - 2  # d = 1/m

    def window(i: int, j: int) -> tuple[int, int]:
        scale = m * counts[i]
        release = max(0, -(-((m * j + 1) * period) // scale) - 1)
        return release, ((m * (j + 1) - 1) * period) // scale

    drawn = [0] * k
    windows = [window(i, 0) for i in range(k)]
    for t in range(period):
        best, best_deadline = -1, -1
        for i in range(k):
            release, deadline = windows[i]
            if release <= t and (best < 0 or deadline < best_deadline):
                best, best_deadline = i, deadline
        assert best >= 0 and best_deadline >= t, "EDF missed a Tijdeman window"
        table[t] = best
        drawn[best] += 1
        windows[best] = window(best, drawn[best])
    assert drawn == list(counts), "a period must hold exactly counts[i] slots of source i"
    return table


class _MixtureOrder(Order):
    def __init__(self, sampler: MixtureSampler, seed: int, epoch: int, shuffle: bool) -> None:
        self.n = len(sampler)
        self._sampler = sampler
        self._shuffle = shuffle
        self._seeds, self._epoch_key = mixture_keys(seed, epoch, sampler.k)
        self._orders: dict[tuple[int, int], ShuffledOrder] = {}

    def _component(self, i: int, cycle: int) -> ShuffledOrder:
        order = self._orders.get((i, cycle))
        if order is None:
            if len(self._orders) >= 256:  # a small source may cycle many times per epoch
                self._orders.clear()
            epoch = (self._epoch_key ^ cycle) & M64
            order = ShuffledOrder(self._sampler.sizes[i], seed=self._seeds[i], epoch=epoch)
            self._orders[(i, cycle)] = order
        return order

    def index(self, positions: np.ndarray | list[int] | range) -> np.ndarray:
        array = _as_positions(positions, self.n, "position")
        sampler = self._sampler
        flat = array.ravel().astype(np.int64)
        block, slot = np.divmod(flat, sampler.period)
        which = sampler.table[slot]
        draws = block * sampler.slot_counts[slot]
        draws += sampler.rank[slot]
        out = np.empty_like(flat)
        for i in range(sampler.k):
            where = np.flatnonzero(which == i)
            if not where.size:
                continue
            mine, size = draws[where], sampler.sizes[i]
            first, last = int(mine.min()) // size, int(mine.max()) // size
            if first == last:  # one cycle of the source (the usual case): no division
                local = mine - first * size if first else mine
                if self._shuffle:
                    local = self._component(i, first).index(local)
            else:
                cycles, local = np.divmod(mine, size)
                if self._shuffle:
                    for cycle in range(first, last + 1):
                        hit = cycles == cycle
                        local[hit] = self._component(i, cycle).index(local[hit])
            local += sampler.offsets[i]
            out[where] = local
        return out.reshape(array.shape)


class MixtureSampler(Sampler):
    """Positions to records of a mixture (see the module docstring).

    Args:
        sizes: records in each source.
        counts: slots of each source in one period of the schedule (all ``>= 1``).
        period: ``sum(counts)``.
        exhaustion: ``"stop"`` or ``"restart"``.
        samples_per_epoch: the epoch length; default: set by ``exhaustion``.
    """

    def __init__(
        self,
        sizes: list[int],
        counts: list[int],
        period: int,
        *,
        exhaustion: str = "stop",
        samples_per_epoch: int | None = None,
    ) -> None:
        if exhaustion not in EXHAUSTION_POLICIES:
            raise Error(
                f"exhaustion must be one of {list(EXHAUSTION_POLICIES)}, got {exhaustion!r}"
            )
        assert sum(counts) == period and min(counts) >= 1 and len(sizes) == len(counts)
        self.k = len(sizes)
        self.sizes = [int(n) for n in sizes]
        self.num_records = sum(self.sizes)
        self.offsets = np.cumsum([0, *self.sizes[:-1]]).astype(np.int64)
        self.period = period
        self.counts = np.asarray(counts, dtype=np.int64)
        self.exhaustion = exhaustion
        self.table = schedule(list(counts), period)
        self.slot_counts = self.counts[self.table]  # draws of the slot's source per period
        self.rank = np.empty(period, dtype=np.int64)  # draws of the slot's source before it
        self._slots = []
        for i in range(self.k):
            slots = np.flatnonzero(self.table == i)
            self.rank[slots] = np.arange(slots.size)
            self._slots.append(slots)
        stop = min(self.draw_position(i, n) for i, n in enumerate(self.sizes))
        if samples_per_epoch is None:
            if exhaustion == "stop":
                samples_per_epoch = stop
            else:
                samples_per_epoch = 1 + max(
                    self.draw_position(i, n - 1) for i, n in enumerate(self.sizes)
                )
        self.samples_per_epoch = check_positions(
            samples_per_epoch,
            "samples_per_epoch",
            limit=stop if exhaustion == "stop" else None,
            context=f" with exhaustion={exhaustion!r}",
            hint="; use exhaustion='restart' for longer epochs",
        )

    def draw_position(self, i: int, j: int) -> int:
        """The position of the ``j``-th draw (from 0) of source ``i`` in every epoch."""
        block, r = divmod(j, int(self.counts[i]))
        return block * self.period + int(self._slots[i][r])

    def __len__(self) -> int:
        return self.samples_per_epoch

    def order(self, *, seed: int, epoch: int, shuffle: bool = True) -> Order:
        """The order of epoch ``epoch``: mixture record index at each position."""
        return _MixtureOrder(self, seed, epoch, shuffle)

    def identity(self) -> dict[str, Any]:
        """``{"kind", "sizes", "counts", "period", "exhaustion", "samples_per_epoch"}``."""
        return {
            "kind": "mixture",
            "sizes": list(self.sizes),
            "counts": self.counts.tolist(),
            "period": self.period,
            "exhaustion": self.exhaustion,
            "samples_per_epoch": self.samples_per_epoch,
        }

    def __repr__(self) -> str:
        return (
            f"MixtureSampler(sizes={self.sizes}, counts={self.counts.tolist()}, "
            f"exhaustion={self.exhaustion!r}, samples_per_epoch={self.samples_per_epoch})"
        )


class Mixture(ConcatSource):
    """The sources of a mixture end to end, with the :class:`MixtureSampler` a Loader uses.

    Attributes:
        sampler: the positions-to-records map (the Loader picks it up by itself).
        proportions: the proportions in use, ``counts[i] / period`` as floats.
    """

    def __init__(
        self,
        weights: Mapping[Any, Any],
        *,
        exhaustion: str = "stop",
        samples_per_epoch: int | None = None,
    ) -> None:
        if not isinstance(weights, Mapping) or not weights:
            raise Error(
                f"mix() needs a non-empty dict {{source: weight}}, got {type(weights).__name__}"
            )
        super().__init__(list(weights))
        moving = [bool(getattr(s, "epoch_dependent", False)) for s in self.sources]
        lengths = {getattr(s, "seq_len", None) for s, m in zip(self.sources, moving) if m}
        if lengths and (len(lengths) > 1 or not all(moving)):
            # every window then holds seq_len + 1 tokens, so window weights are token weights
            raise Error(
                f"mix() of token sources weighs tokens only when every source is an "
                f"epochal.tokens(...) of one seq_len; got seq_len "
                f"{[getattr(s, 'seq_len', None) for s in self.sources]}"
            )
        values = list(weights.values())
        for i, w in enumerate(values):
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
                raise Error(f"mix() weight of source {i} must be a number, got {w!r}")
            if not math.isfinite(w) or w < 0:
                raise Error(f"mix() weight of source {i} must be finite and >= 0, got {w!r}")
        if not sum(values) > 0:
            raise Error(f"mix() weights must sum to a positive number, got {values}")
        if 0 in values:
            raise Error(
                f"mix() weight of source {values.index(0)} is 0: leave that source out instead"
            )
        counts, period = rational_proportions(values)
        if min(counts) < 1:
            raise Error(
                f"mix() weight {values[counts.index(0)]!r} is below 1/{MAX_PERIOD} of the total "
                f"{sum(values)!r}; mixtures support proportions down to 1/{MAX_PERIOD}"
            )
        self.sampler = MixtureSampler(
            [len(s) for s in self.sources],
            counts,
            period,
            exhaustion=exhaustion,
            samples_per_epoch=samples_per_epoch,
        )
        self.proportions = [c / period for c in counts]

    def __repr__(self) -> str:
        shares = ", ".join(f"{p:.4g}" for p in self.proportions)
        return f"Mixture({len(self.sources)} sources, n={len(self)}, proportions=[{shares}])"


def mix(
    weights: Mapping[Any, Any],
    *,
    exhaustion: str = "stop",
    samples_per_epoch: int | None = None,
) -> Mixture:
    """Draw from several sources in fixed proportions: ``mix({a: 0.7, b: 0.3})``.

    Args:
        weights: ``{source: weight}``; weights are positive numbers, only their ratios
            matter (``{a: 7, b: 3}`` is the same mixture).
        exhaustion: what happens when a source runs out: ``"stop"`` ends the epoch,
            ``"restart"`` reshuffles that source and goes on until every source is done
            (see the module docstring).
        samples_per_epoch: a fixed epoch length instead.

    Returns:
        A :class:`Mixture`: pass it to :class:`epochal.Loader` like any source.

    Raises:
        epochal.Error: no source, an empty source, a negative, zero or non-finite weight,
            an unknown policy, or an epoch length the policy cannot fill.
    """
    return Mixture(weights, exhaustion=exhaustion, samples_per_epoch=samples_per_epoch)
