"""Source views: a subset of a source, a train/val/test split, several sources end to end.

Views hold no records, only index arithmetic, so they cost O(1) (concat) or O(m) (a
subset of m indices) memory and are as fork-safe as the sources beneath them. They keep
the batched fast paths of what they wrap (``get_columns``, ``get_many``) and its flags
(``deterministic``, ``fast_gather``), and derive their ``fingerprint`` from it, so a
Loader state taken on one view is refused on another.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from epochal._apportion import largest_remainder
from epochal._errors import Error, OutOfRangeError
from epochal._indices import check_indices
from epochal._keys import check_seed, split_seed
from epochal.order import ShuffledOrder
from epochal.sources._joined import JoinedColumns
from epochal.sources._protocol import fingerprint_of, get_many, is_batched

__all__ = ["ConcatSource", "SubsetSource", "concat", "split", "subset"]

_OUT_OF_RANGE = "record index {bad} is out of range for a concat of {n} records"


def _check_source(source: Any, what: str) -> int:
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise Error(
            f"{what} needs sources with __len__ and __getitem__, got {type(source).__name__}"
        )
    n = len(source)
    if n < 1:
        raise Error(f"{what} got an empty source ({source!r} has no records)")
    return n


class SubsetSource:
    """Records ``indices`` of ``source``, in that order: ``view[i] = source[indices[i]]``.

    Indices may repeat (a record then appears several times per epoch).
    """

    def __init__(self, source: Any, indices: Any) -> None:
        n = _check_source(source, "subset()")
        array = np.asarray(indices)
        if array.ndim != 1 or array.size == 0:
            raise Error(f"subset() needs a non-empty 1-D array of indices, got shape {array.shape}")
        if array.dtype.kind not in "iu":
            raise Error(f"subset() indices must be integers, got an array of dtype {array.dtype}")
        bad = np.flatnonzero((array < 0) | (array >= n))
        if bad.size:
            raise Error(
                f"subset() index {int(array[bad[0]])} (at {int(bad[0])}) is out of range for a "
                f"source of {n} records; valid indices are 0..{n - 1}"
            )
        self.source = source
        self.indices = array.astype(np.int64)
        self.indices.flags.writeable = False
        self.deterministic = bool(getattr(source, "deterministic", False))
        self.fast_gather = bool(getattr(source, "fast_gather", False))
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not 0 <= index < len(self.indices):
            raise OutOfRangeError(
                f"record index {index} is out of range for a subset of {len(self.indices)} records"
            )
        return self.source[int(self.indices[index])]

    @property
    def batched(self) -> bool:
        """Whether reading many records at once is cheaper than one by one (the parent's)."""
        return is_batched(self.source)

    def get_many(self, indices: np.ndarray) -> list[Any]:
        """The records ``indices`` of the subset, through the parent's batch path."""
        return get_many(self.source, self.indices[indices])

    @property
    def get_columns(self) -> Callable[[np.ndarray], dict[str, Any]] | None:
        """The parent's columnar batch path through the subset's indices (None without one)."""
        parent = getattr(self.source, "get_columns", None)
        if not callable(parent):
            return None
        return lambda indices: parent(self.indices[indices])

    @property
    def fingerprint(self) -> str:
        """Hash of the parent's fingerprint and the subset's indices."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=8)
            digest.update(fingerprint_of(self.source).encode())
            digest.update(self.indices.tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"SubsetSource({self.source!r}, n={len(self.indices)})"


def subset(source: Any, indices: Any) -> SubsetSource:
    """A view of the records ``indices`` of ``source`` (a Source itself).

    Args:
        source: any Source.
        indices: a non-empty 1-D sequence of integers in ``[0, len(source))``.

    Raises:
        epochal.Error: empty or non-integer indices, or an index out of range.
    """
    return SubsetSource(source, indices)


def split(source: Any, fractions: Sequence[float], *, seed: int = 0) -> tuple[SubsetSource, ...]:
    """Split ``source`` into disjoint random subsets, e.g. ``train, val = split(src, [0.9, 0.1])``.

    Membership is a function of ``(seed, len(source), fractions)`` alone (a keyed
    permutation of the records, cut into consecutive runs), so it never changes between
    runs, machines or epochal versions with the same arguments. Sizes are the fractions
    of ``len(source)`` rounded by largest remainder: they add up to ``len(source)``. Each
    subset lists its records in increasing index order (reads stay local).

    Args:
        source: any Source.
        fractions: one non-negative fraction per subset, summing to 1.
        seed: the split's seed, in ``[0, 2**64)``.

    Raises:
        epochal.Error: fractions that are negative or do not sum to 1, or a subset that
            would be empty.
    """
    n = _check_source(source, "split()")
    values = [float(f) for f in fractions]
    if not values or any(not math.isfinite(f) or f < 0 for f in values):
        raise Error(f"split() fractions must be finite numbers >= 0, got {list(fractions)}")
    if not math.isclose(sum(values), 1.0, rel_tol=0, abs_tol=1e-9):
        raise Error(f"split() fractions must sum to 1, got {values} (sum {sum(values)!r})")
    seed = check_seed(seed)
    sizes = largest_remainder(values, n)
    if 0 in sizes:
        raise Error(
            f"split() of {n} records by {values} gives sizes {sizes}: subset "
            f"{sizes.index(0)} would be empty; use fewer subsets or larger fractions"
        )
    order = ShuffledOrder(n, seed=split_seed(seed), epoch=0)
    bounds = np.cumsum([0, *sizes])
    return tuple(
        SubsetSource(source, np.sort(order.index(np.arange(lo, hi, dtype=np.int64))))
        for lo, hi in itertools.pairwise(bounds)
    )


class ConcatSource:
    """Several sources end to end: records ``0..n_0-1`` are the first source's, and so on.

    ``get_columns`` needs every source to have the same column names. When every source
    is a :func:`subset` of one and the same parent (e.g. the parts of a :func:`split`),
    the concat reads the parent directly, in one gather; when every source has only
    fixed-size columns with matching layouts (:func:`~epochal.from_arrays` over contiguous
    arrays, local stores), one gather spans them all (see ``_joined``). Otherwise each
    column is gathered per source and assembled in the requested order (one extra copy of
    the batch).
    """

    def __init__(self, sources: Sequence[Any]) -> None:
        if not sources:
            raise Error("concat() needs at least one source")
        sizes = [_check_source(s, "concat()") for s in sources]
        self.sources = tuple(sources)
        self.offsets = np.cumsum([0, *sizes]).astype(np.int64)
        self.offsets.flags.writeable = False
        self.deterministic = all(getattr(s, "deterministic", False) for s in sources)
        self.fast_gather = all(getattr(s, "fast_gather", False) for s in sources)
        self._columnar = all(callable(getattr(s, "get_columns", None)) for s in sources)
        self.epoch_dependent = any(getattr(s, "epoch_dependent", False) for s in sources)
        self._fingerprint: str | None = None
        self._flat: SubsetSource | None = None
        layout = JoinedColumns.layout_of(self.sources)
        self._joined = None if layout is None else JoinedColumns(self.sources, layout)
        parents = {id(s.source) for s in sources if isinstance(s, SubsetSource)}
        if len(parents) == 1 and all(isinstance(s, SubsetSource) for s in sources):
            self._flat = SubsetSource(
                sources[0].source, np.concatenate([s.indices for s in sources])
            )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def for_epoch(self, epoch: int, *, seed: int = 0) -> ConcatSource:
        """The concat of every source's records of ``epoch`` (see ``epoch_dependent``)."""
        if not self.epoch_dependent:
            return self
        return ConcatSource(
            [
                s.for_epoch(epoch, seed=seed) if getattr(s, "epoch_dependent", False) else s
                for s in self.sources
            ]
        )

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(source number, index within that source)`` of each record index."""
        indices = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self.offsets, indices, side="right") - 1
        return which, indices - self.offsets[which]

    def _checked(self, indices: np.ndarray) -> np.ndarray:
        return check_indices(indices, len(self), _OUT_OF_RANGE)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not 0 <= index < len(self):
            raise OutOfRangeError(_OUT_OF_RANGE.format(bad=index, n=len(self)))
        if self._flat is not None:
            return self._flat[index]
        which = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.sources[which][index - int(self.offsets[which])]

    @property
    def batched(self) -> bool:
        """Whether every source reads batches faster than single records."""
        return all(is_batched(s) for s in self.sources)

    def _parts(self, indices: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(source number, batch slots, local indices)`` for each source the batch reads."""
        which, local = self.locate(indices)
        if len(self.sources) == 1:
            return [(0, np.arange(len(indices)), local)]
        parts = []
        for k in np.flatnonzero(np.bincount(which, minlength=len(self.sources))).tolist():
            where = np.flatnonzero(which == k)
            parts.append((k, where, local[where]))
        return parts

    def get_many(self, indices: np.ndarray) -> list[Any]:
        """The records ``indices``, read per source in one batch each."""
        if self._flat is not None:
            return self._flat.get_many(indices)
        out: list[Any] = [None] * len(indices)
        for k, where, local in self._parts(indices):
            for j, record in zip(where.tolist(), get_many(self.sources[k], local)):
                out[j] = record
        return out

    @property
    def get_columns(self) -> Callable[[np.ndarray], dict[str, Any]] | None:
        """Columnar batches when every source has ``get_columns`` (None otherwise)."""
        return self._get_columns if self._columnar else None

    def _get_columns(self, indices: np.ndarray) -> dict[str, Any]:
        if self._flat is not None:
            return self._flat.get_columns(indices)  # type: ignore[misc]
        if self._joined is not None:
            return self._joined.gather(self._checked(indices))
        parts = self._parts(indices)
        if len(parts) == 1:
            k, _, local = parts[0]
            return self.sources[k].get_columns(local)
        out: dict[str, Any] = {}
        names: list[str] | None = None
        for k, where, local in parts:
            columns = self.sources[k].get_columns(local)
            if names is None:
                names = list(columns)
                for name, column in columns.items():
                    out[name] = _empty_like(column, len(indices))
            elif sorted(columns) != sorted(names):
                raise Error(
                    f"concat(): source {k} has columns {sorted(columns)} but source "
                    f"{parts[0][0]} has {sorted(names)}; concatenated sources need the same columns"
                )
            for name, column in columns.items():
                _scatter(out[name], where, column, name, k)
        return out

    @property
    def fingerprint(self) -> str:
        """Hash of the sources' fingerprints, in order."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=8)
            for s in self.sources:
                digest.update(fingerprint_of(s).encode() + b"\0")
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ConcatSource({len(self.sources)} sources, n={len(self)})"


def _empty_like(column: Any, n: int) -> Any:
    # numeric columns are assembled as arrays; strings, bytes and objects as lists, which
    # is what the Loader makes of them anyway (and their widths may differ per source)
    if isinstance(column, np.ndarray) and column.dtype.kind in "biufc":
        return np.empty((n, *column.shape[1:]), dtype=column.dtype)
    return [None] * n


def _scatter(out: Any, where: np.ndarray, column: Any, name: str, k: int) -> None:
    if isinstance(out, np.ndarray):
        if (
            not isinstance(column, np.ndarray)
            or column.shape[1:] != out.shape[1:]
            or column.dtype != out.dtype
        ):
            got = f"{getattr(column, 'dtype', type(column).__name__)}{getattr(column, 'shape', '')}"
            raise Error(
                f"concat(): column {name!r} of source {k} is {got} per batch, expected "
                f"{out.dtype} of shape (batch, *{out.shape[1:]}) like the other sources"
            )
        if column.ndim > 1 and column.flags.c_contiguous and out.flags.c_contiguous:
            # whole records as single opaque items: one memcpy per record, not per element
            row = np.dtype((np.void, column.itemsize * int(np.prod(column.shape[1:]))))
            records = column.reshape(len(column), -1).view(row).reshape(len(column))
            out.reshape(len(out), -1).view(row).reshape(len(out))[where] = records
        else:
            out[where] = column
    else:
        values = column.tolist() if isinstance(column, np.ndarray) else list(column)
        for j, value in zip(where.tolist(), values):
            out[j] = value


def concat(*sources: Any) -> ConcatSource:
    """All records of ``sources``, one after the other (a Source itself).

    Raises:
        epochal.Error: no source, or an empty one.
    """
    return ConcatSource(sources)
