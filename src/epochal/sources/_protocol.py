"""The Source protocol: records by index."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from epochal.sampling import Sampler

__all__ = ["Record", "SampledSource", "Source", "fingerprint_of", "get_many", "is_batched"]

Record = dict[str, Any]
"""A record is a dict of columns (a map-style Dataset may return any picklable object)."""


@runtime_checkable
class Source(Protocol):
    """Anything with a length and records by index: the start of epochal's data path.

    Required:
        ``__len__()``: the number of records, ``n >= 1``.
        ``__getitem__(i)``: record ``i`` for ``0 <= i < n``, a dict of columns.

    Optional (the Loader uses them when present, and falls back when not):
        ``get_many(indices) -> list[record]``: records for a 1-D int64 array of indices,
            in that order; a batched fast path for sources where one call is cheaper
            than many (one fancy-index per column, one read per shard).
        ``get_columns(indices) -> dict[str, numpy.ndarray | list]``: the same records as
            columns (first axis = the batch), so a batch needs no per-record Python work.
        ``fingerprint: str``: a short string that changes when the data changes; stored in
            loader states so a resume on different data is refused.
        ``deterministic: bool``: True when reading a record uses no global RNG, so the
            Loader need not seed the global RNGs around each read (``from_arrays`` and the
            store are; an arbitrary ``torch`` Dataset is not assumed to be).
        ``fast_gather: bool``: True when ``get_columns`` is a gather from memory (no I/O,
            no decoding), cheaper than moving its result between processes; the Loader
            then reads plain batches in the calling process and keeps its workers for
            transforms.
        ``epoch_dependent: bool`` with ``for_epoch(epoch, *, seed) -> Source``: records
            that depend on the epoch (token windows whose boundaries move each epoch,
            :func:`epochal.tokens`). The Loader reads the batches of epoch ``e`` from
            ``source.for_epoch(e, seed=loader.seed)``, a Source of the same length;
            :func:`epochal.concat` and :func:`epochal.mix` pass the hook on.

    Sources are stateless and must be safe to use after ``fork``: open files lazily, per
    process, and never hold a handle that a forked worker would share.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@runtime_checkable
class SampledSource(Source, Protocol):
    """A Source that brings the sampler a Loader over it uses (:func:`epochal.mix`).

    ``sampler``: an :class:`epochal.Sampler` over this source's records. A Loader built
    without ``sampler=`` draws its positions from it instead of the plain shuffle, so a
    mixture needs no extra argument; an explicit ``sampler=`` takes precedence.
    """

    sampler: Sampler


def get_many(source: Any, indices: np.ndarray) -> list[Any]:
    """Records ``indices`` of ``source``, through its ``get_many`` when it has one."""
    fast = getattr(source, "get_many", None)
    if fast is not None:
        return list(fast(indices))
    return [source[int(i)] for i in indices]


def is_batched(source: Any) -> bool:
    """Whether ``source`` reads a batch in one call: its ``batched`` flag, else a ``get_many``."""
    batched = getattr(source, "batched", None)
    return bool(batched) if batched is not None else callable(getattr(source, "get_many", None))


def fingerprint_of(source: Any) -> str:
    """``source.fingerprint`` when it has one, else its type and length (no data is read)."""
    own = getattr(source, "fingerprint", None)
    if isinstance(own, str):
        return own
    return f"{type(source).__module__}.{type(source).__qualname__}:{len(source)}"
