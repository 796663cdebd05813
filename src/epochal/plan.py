"""Plan: pure arithmetic from an epoch's positions to this rank's batches.

Global batch ``k`` of a pass covers positions ``[start + k*G, start + (k+1)*G)`` with
``G = batch_size * world_size``; rank ``r`` takes the ``r``-th slice of ``batch_size``
positions. ``start`` is the resume point: the number of positions of the epoch already
consumed by all ranks together. Because the resume point counts samples, not batches, a
job can resume with another world size or batch size and neither repeat nor skip a record
(P4, P5).

Every rank yields the same number of batches (unequal counts hang DDP collectives). The
final partial global batch of ``m < G`` positions follows one of two policies:

- ``drop_last=True``: it is dropped.
- ``drop_last=False``: it is split into ``world_size`` contiguous parts whose sizes differ
  by at most one. Only when ``m < world_size`` do some ranks get no real record; each of
  those takes one record of the final batch again. That is the fewest repeats that keeps
  every rank's batch non-empty: ``max(0, world_size - m)``, all in the last batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from epochal._errors import InvalidValueError, OutOfRangeError

__all__ = ["Plan"]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One rank's batches over the rest of an epoch of ``num_records`` positions.

    Args:
        num_records: positions in the epoch (the dataset length), ``>= 1``.
        batch_size: positions per batch on each rank, ``>= 1``.
        world_size: number of ranks, ``>= 1``.
        rank: this rank, ``0 <= rank < world_size``.
        drop_last: drop the final partial global batch instead of splitting it.
        start: positions of the epoch already consumed by all ranks, ``0 <= start <= num_records``.
    """

    num_records: int
    batch_size: int
    world_size: int = 1
    rank: int = 0
    drop_last: bool = False
    start: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.num_records >= 1, f"num_records must be >= 1, got {self.num_records}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.world_size >= 1, f"world_size must be >= 1, got {self.world_size}"),
            (
                0 <= self.rank < self.world_size,
                f"rank must be in [0, world_size={self.world_size}), got {self.rank}",
            ),
            (
                0 <= self.start <= self.num_records,
                f"start must be in [0, num_records={self.num_records}], got {self.start}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidValueError(message)

    @property
    def global_batch_size(self) -> int:
        """Positions consumed per step by all ranks together: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches each rank yields in this pass (the same on every rank)."""
        remaining = self.num_records - self.start
        full, partial = divmod(remaining, self.global_batch_size)
        return full + (1 if partial and not self.drop_last else 0)

    @property
    def full_batches(self) -> int:
        """Batches of this pass in which every rank has ``batch_size`` positions (they come first)."""
        return (self.num_records - self.start) // self.global_batch_size

    def full_positions(self, first: int, stop: int) -> np.ndarray:
        """Positions of this rank's full batches ``first..stop-1``, one row per batch (int64).

        The vectorised form of :meth:`positions` for ``stop <= full_batches``.
        """
        if not 0 <= first <= stop <= self.full_batches:
            raise OutOfRangeError(
                f"full batches {first}..{stop - 1} are out of range: this pass has "
                f"{self.full_batches} full batches"
            )
        ks = np.arange(first, stop, dtype=np.int64)[:, None]
        offset = self.start + self.rank * self.batch_size
        return offset + ks * self.global_batch_size + np.arange(self.batch_size, dtype=np.int64)

    def full_range(self, first: int, stop: int) -> tuple[int, int] | None:
        """The positions of this rank's full batches ``first..stop-1`` as one range
        ``[lo, hi)`` when they are contiguous (``world_size == 1``), else None; batch
        ``first + j`` is then ``[lo + j*batch_size, lo + (j+1)*batch_size)``."""
        if not 0 <= first <= stop <= self.full_batches:
            raise OutOfRangeError(
                f"full batches {first}..{stop - 1} are out of range: this pass has "
                f"{self.full_batches} full batches"
            )
        if self.world_size != 1:
            return None
        return self.start + first * self.batch_size, self.start + stop * self.batch_size

    def _check_batch(self, k: int) -> None:
        if not 0 <= k < len(self):
            raise OutOfRangeError(f"batch {k} is out of range for a plan of {len(self)} batches")

    def positions(self, k: int) -> np.ndarray:
        """Epoch positions of this rank's batch ``k`` (int64); repeats come last."""
        self._check_batch(k)
        lo = self.start + k * self.global_batch_size
        remaining = self.num_records - lo
        if remaining >= self.global_batch_size:
            first = lo + self.rank * self.batch_size
            return np.arange(first, first + self.batch_size, dtype=np.int64)
        share, extra = divmod(remaining, self.world_size)
        size = share + (1 if self.rank < extra else 0)
        if size == 0:
            # fewer records left than ranks: this rank repeats one record of the last batch
            return np.array([lo + (self.rank - extra) % remaining], dtype=np.int64)
        first = lo + self.rank * share + min(self.rank, extra)
        return np.arange(first, first + size, dtype=np.int64)

    def repeats(self, k: int) -> int:
        """How many trailing positions of this rank's batch ``k`` repeat another rank's record."""
        self._check_batch(k)
        remaining = self.num_records - self.start - k * self.global_batch_size
        return 1 if remaining < self.world_size and self.rank >= remaining else 0

    @property
    def total_repeats(self) -> int:
        """Repeated samples delivered by all ranks together in this pass."""
        if self.drop_last:
            return 0
        partial = (self.num_records - self.start) % self.global_batch_size
        return max(0, self.world_size - partial) if partial else 0

    def consumed(self, k: int) -> int:
        """The resume point once batches ``0..k`` have been delivered on every rank."""
        self._check_batch(k)
        return min(self.num_records, self.start + (k + 1) * self.global_batch_size)
