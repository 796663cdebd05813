"""Samplers: which record sits at each position of an epoch, beyond one shuffled pass.

A :class:`Sampler` generalises :func:`epochal.make_order`: it fixes the number of positions
per epoch (``len(sampler)``, which need not be the source's length) and gives, for each
``(seed, epoch)``, an order whose ``index(positions)`` maps positions to record indices,
vectorised over numpy arrays. The Loader plans, shards and resumes over positions exactly
as without a sampler, so every sampler keeps the core's guarantees: a batch is a function
of ``(seed, epoch, position)``, a resume costs what one ``order(...)`` call costs, and a
resume on another world size neither repeats nor skips a position.

Weighted sampling (:class:`WeightedSampler`, :func:`balanced`):

- **With replacement**: position ``p`` of epoch ``e`` draws a uniform ``u`` from a keyed
  hash of ``(seed, e, p)`` (splitmix64, the order's mixer) and takes the record whose
  cumulative-weight interval holds ``u * sum(w)`` (the first cumulative weight that
  reaches it, found by an indexed search: see :class:`_GuideTable`). Cost: O(n) once
  when the sampler is built (cumulative sums and a guide table, 24 bytes per record),
  then O(1) expected per position and O(1) per resume.
- **Without replacement**: the epoch is a weighted random permutation by exponential
  races (Efraimidis-Spirakis): record ``i`` gets the key ``-log(u_i) / w_i`` with ``u_i``
  hashed from ``(seed, e, i)``, and the records in increasing key order are the epoch's
  positions. The first position holds record ``i`` with probability ``w_i / sum(w)``, the
  next one is drawn the same way from the rest, and so on (successive sampling
  proportional to weight). Records of weight 0 are never drawn. Cost: one O(n log n)
  pass per epoch (the keys and a stable argsort; ~3 s at n = 10**7 on a loaded 2-core
  machine, see ``benchmarks/bench_sampling.py``) and 4-8 bytes per record for the
  permutation, computed when an epoch's first batch is requested (also after a resume)
  and kept for that epoch. A resume therefore costs one such pass, not a replay of the
  batches before it.

A record drawn twice in one epoch (with replacement) gets the same per-sample random
stream both times: the stream is keyed by ``(seed, epoch, record index)``, the core's
contract, not by position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from epochal._errors import Error
from epochal._keys import uniform, weighted_key
from epochal.order import Order, _as_positions, make_order

__all__ = ["Sampler", "ShuffleSampler", "WeightedSampler", "balanced", "uniform"]


class Sampler:
    """Base of the samplers: positions per epoch, and an order per ``(seed, epoch)``.

    Subclasses set :attr:`num_records` (the length of the source they index) and
    implement ``__len__`` (positions per epoch), :meth:`order` and :meth:`identity`.
    """

    num_records: int
    windowable = False  # True only for the plain order, which a windowed read may replace

    def __len__(self) -> int:
        raise NotImplementedError

    def order(self, *, seed: int, epoch: int, shuffle: bool = True) -> Order:
        """The order of epoch ``epoch``: ``index(positions)`` gives record indices."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any] | None:
        """A JSON description that identifies the sampler; the Loader stores it in its
        state and refuses to load a state taken with another one. None for the Loader's
        default shuffle, whose state has no ``"sampler"`` key."""
        raise NotImplementedError

    def state(self) -> dict[str, Any] | None:
        """The same as :meth:`identity` (its former name)."""
        return self.identity()

    def describe(self, *, shuffle: bool) -> str:
        """How this sampler orders an epoch, in a few words (for ``Loader.describe()``)."""
        return f"sampler {type(self).__name__} (shuffle={shuffle})"


class ShuffleSampler(Sampler):
    """The Loader's default: every record once per epoch, in the plain keyed order.

    ``order(seed=s, epoch=e)`` is :func:`epochal.make_order` ``(n, seed=s, epoch=e,
    shuffle=shuffle)``: a global shuffle, or the source order with ``shuffle=False``.

    Args:
        num_records: the length of the source.
    """

    windowable = True

    def __init__(self, num_records: int) -> None:
        self.num_records = int(num_records)

    def __len__(self) -> int:
        return self.num_records

    def order(self, *, seed: int, epoch: int, shuffle: bool = True) -> Order:
        """The plain order of epoch ``epoch`` (see :func:`epochal.make_order`)."""
        return make_order(self.num_records, seed=seed, epoch=epoch, shuffle=shuffle)

    def identity(self) -> None:
        """None: a Loader state without a ``"sampler"`` key is a default-shuffle state."""
        return None

    def describe(self, *, shuffle: bool) -> str:
        """``"global shuffle"`` or ``"source order (shuffle=False)"``."""
        return "global shuffle" if shuffle else "source order (shuffle=False)"

    def __repr__(self) -> str:
        return f"ShuffleSampler(num_records={self.num_records})"


def check_positions(
    value: Any, what: str, *, limit: int | None, context: str = "", hint: str = ""
) -> int:
    """``value`` (a sampler's positions per epoch) as an int in ``[1, limit]`` (or ``>= 1``).

    Raises:
        Error: ``"{what} must be {valid range}{context}, got {value}{hint}"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise Error(f"{what} must be an integer, got {value!r}")
    if value < 1 or (limit is not None and value > limit):
        valid = "an integer >= 1" if limit is None else f"in [1, {limit}]"
        raise Error(f"{what} must be {valid}{context}, got {value}{hint}")
    return int(value)


def _check_weights(weights: Any) -> np.ndarray:
    array = np.asarray(weights)
    if array.ndim != 1 or array.size == 0:
        raise Error(f"weights must be a non-empty 1-D sequence, got shape {array.shape}")
    if array.dtype.kind not in "iuf" or array.dtype.kind == "b":
        raise Error(f"weights must be numbers, got an array of dtype {array.dtype}")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array) | (array < 0))
    if bad.size:
        raise Error(
            f"weights must be finite and >= 0, got weights[{bad[0]}] = {float(array[bad[0]])!r}"
        )
    if not array.sum() > 0:
        raise Error(f"weights must have a positive sum, got all {array.size} weights zero")
    return array


class _GuideTable:
    """``searchsorted(cumulative, targets, side="left")`` in O(1) expected per target.

    Indexed search (Chen and Asau, 1974): the range of the cumulative weights is cut into
    ``m = len(cumulative)`` equal buckets, and ``guide[b]`` is the answer for the bucket's
    lower end. A target starts at its bucket's guide and steps forward while the
    cumulative weight is below it: one or two steps on average, instead of the ~24
    cache-missing steps of a binary search over 10**7 weights. Targets still unresolved
    after a few steps (many tiny weights in one bucket) finish with a binary search, so
    the result is exactly ``searchsorted``'s for every input.
    """

    _STEPS = 4

    def __init__(self, cumulative: np.ndarray) -> None:
        self.cumulative = cumulative
        self.m = len(cumulative)
        self.lower = np.arange(self.m, dtype=np.float64) * (cumulative[-1] / self.m)
        self.guide = np.searchsorted(cumulative, self.lower, side="left")

    def search(self, targets: np.ndarray) -> np.ndarray:
        cumulative = self.cumulative
        bucket = np.minimum((targets * (self.m / cumulative[-1])).astype(np.int64), self.m - 1)
        # rounding may put a target just below its bucket's lower end: step back
        bucket -= self.lower[bucket] > targets
        found = self.guide[bucket]
        pending = np.flatnonzero(cumulative[found] < targets)
        for _ in range(self._STEPS):
            if not pending.size:
                return found
            found[pending] += 1
            pending = pending[cumulative[found[pending]] < targets[pending]]
        if pending.size:
            found[pending] = np.searchsorted(cumulative, targets[pending], side="left")
        return found


class _WithReplacement(Order):
    def __init__(self, table: _GuideTable, n: int, key: int) -> None:
        self.n = n
        self._table = table
        self._key = key

    def index(self, positions: np.ndarray | list[int] | range) -> np.ndarray:
        array = _as_positions(positions, self.n, "position")
        targets = uniform(self._key, array.ravel()) * self._table.cumulative[-1]
        # u is in (0, 1]: the first interval whose upper end reaches u*total; intervals
        # of weight 0 are empty and never chosen
        return self._table.search(targets).astype(np.int64).reshape(array.shape)


class _Permutation(Order):
    def __init__(self, permutation: np.ndarray) -> None:
        self.n = len(permutation)
        self._permutation = permutation

    def index(self, positions: np.ndarray | list[int] | range) -> np.ndarray:
        array = _as_positions(positions, self.n, "position")
        return self._permutation[array].astype(np.int64)


class WeightedSampler(Sampler):
    """Records drawn in proportion to per-record weights (see the module docstring).

    Args:
        weights: one non-negative weight per record of the source (their sum must be > 0);
            only ratios matter.
        num_samples: positions per epoch; default: the number of records (with
            replacement) or of records with a positive weight (without replacement, which
            cannot draw more than that).
        replacement: draw independently at every position (True) or draw a weighted
            random permutation of the records (False).

    ``shuffle=False`` on the Loader has no effect on a weighted sampler: its order is
    random by nature.
    """

    def __init__(
        self, weights: Any, *, num_samples: int | None = None, replacement: bool = True
    ) -> None:
        self.weights = _check_weights(weights)
        self.num_records = int(self.weights.size)
        self.replacement = bool(replacement)
        positive = int(np.count_nonzero(self.weights))
        limit = None if self.replacement else positive
        if num_samples is None:
            num_samples = self.num_records if self.replacement else positive
        self.num_samples = check_positions(
            num_samples,
            "num_samples",
            limit=limit,
            context=f" (records with a positive weight: {positive})",
        )
        self._table = _GuideTable(np.cumsum(self.weights)) if self.replacement else None
        self._cached: tuple[int, int, np.ndarray] | None = None
        self._digest: str | None = None

    def __len__(self) -> int:
        return self.num_samples

    def order(self, *, seed: int, epoch: int, shuffle: bool = True) -> Order:
        """The order of epoch ``epoch`` (``shuffle`` is ignored: weighted orders are random)."""
        key = weighted_key(seed, epoch)
        if self._table is not None:
            return _WithReplacement(self._table, self.num_samples, key)
        if self._cached is None or self._cached[:2] != (seed, epoch):
            self._cached = (seed, epoch, self.permutation(seed=seed, epoch=epoch))
        return _Permutation(self._cached[2])

    def permutation(self, *, seed: int, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s first ``num_samples`` records without replacement: the
        O(n log n) pass of the module docstring."""
        key = weighted_key(seed, epoch)
        dtype = np.int32 if self.num_records < 2**31 else np.int64
        positive = np.flatnonzero(self.weights > 0).astype(dtype)
        races = -np.log(uniform(key, positive)) / self.weights[positive]
        # stable: ties (equal keys) are ordered by record index on every machine
        ranks = np.argsort(races, kind="stable")[: self.num_samples]
        return positive[ranks]

    def identity(self) -> dict[str, Any]:
        """``{"kind", "replacement", "num_samples", "weights"}`` (a hash of the weights)."""
        if self._digest is None:
            self._digest = hashlib.blake2b(self.weights.tobytes(), digest_size=8).hexdigest()
        return {
            "kind": "weighted",
            "replacement": self.replacement,
            "num_samples": self.num_samples,
            "weights": self._digest,
        }

    def __repr__(self) -> str:
        return (
            f"WeightedSampler(num_records={self.num_records}, num_samples={self.num_samples}, "
            f"replacement={self.replacement})"
        )


def balanced(
    labels: Sequence[Any] | np.ndarray | Any,
    *,
    column: str | None = None,
    num_samples: int | None = None,
    replacement: bool = True,
) -> WeightedSampler:
    """A sampler that draws every class equally often: weight ``1 / count(class)`` each.

    Args:
        labels: one label per record (any hashable values: ints, strings), or a Source
            when ``column`` names its label column.
        column: read the labels from this column of the source ``labels``.
        num_samples: positions per epoch (see :class:`WeightedSampler`).
        replacement: see :class:`WeightedSampler`.

    Returns:
        A :class:`WeightedSampler`; pass it as ``Loader(source, ..., sampler=...)``.
    """
    if column is not None:
        labels = _read_column(labels, column)
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise Error(f"balanced() needs a non-empty 1-D sequence of labels, got shape {array.shape}")
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    return WeightedSampler(
        1.0 / counts[inverse.ravel()], num_samples=num_samples, replacement=replacement
    )


def _read_column(source: Any, column: str, chunk: int = 65_536) -> np.ndarray:
    """Column ``column`` of every record of ``source``, read in chunks."""
    from epochal.sources._protocol import get_many

    n = len(source)
    if n < 1:
        raise Error("balanced() got an empty source")
    columnar = callable(getattr(source, "get_columns", None))
    parts = []
    for lo in range(0, n, chunk):
        indices = np.arange(lo, min(n, lo + chunk), dtype=np.int64)
        if columnar:
            columns = source.get_columns(indices)
        else:
            records = get_many(source, indices)
            names = list(records[0]) if isinstance(records[0], dict) else []
            columns = {column: [r[column] for r in records]} if column in names else {}
            columns = columns or dict.fromkeys(names)
        if column not in columns:
            raise Error(
                f"balanced(column={column!r}): the source has no such column; "
                f"it has {sorted(columns)}"
            )
        parts.append(np.asarray(columns[column]))
    return np.concatenate(parts)
