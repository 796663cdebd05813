"""Per-sample randomness: a function of (seed, epoch, record index), never of the worker.

``sample_rng(seed, epoch, index)`` is a ``numpy.random.Generator`` over Philox, a
counter-based bit generator keyed by ``(hash(seed, epoch), index)``: every record gets its
own independent stream, and a record's augmentation is the same whichever worker or rank
loads it (P6, P7).

Legacy code draws from the global RNGs (``np.random.*``, ``random``, ``torch.rand``).
:class:`GlobalRNGs` seeds python ``random``, numpy's global RandomState and torch's CPU
generator from the same key around each read and transform, and puts the caller's states
back afterwards, so such code becomes per-sample deterministic too.
"""

from __future__ import annotations

import random
from types import TracebackType
from typing import Any

import numpy as np

from epochal import _keys
from epochal._errors import InvalidValueError

__all__ = ["GlobalRNGs", "SampleRNGs", "epoch_key", "sample_rng", "sample_seed"]


def epoch_key(seed: int, epoch: int) -> int:
    """The 64-bit key of ``(seed, epoch)`` from which every sample's stream is derived."""
    return _keys.sample_key(seed, epoch)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of record ``index`` in epoch ``epoch`` of a run seeded ``seed``.

    Args:
        seed: the run's seed, in ``[0, 2**64)``.
        epoch: the epoch, in ``[0, 2**64)``.
        index: the record index (not its position), ``>= 0``.

    Returns:
        A fresh ``numpy.random.Generator`` (Philox); the same arguments give the same stream.
    """
    index = int(index)
    if index < 0:
        raise InvalidValueError(f"record index must be >= 0, got {index}")
    # an explicit uint64 array: a list with a key >= 2**63 would go through float64
    key = np.array([epoch_key(seed, epoch), index], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


class SampleRNGs:
    """``sample_rng`` for one batch after another, without building a bit generator each time.

    Constructing a Philox generator costs ~20 us (numpy seeds it from OS entropy before the
    key replaces that); re-keying one costs ~5 us. ``rngs(epoch, index)`` returns a fresh
    ``Generator`` whose stream equals ``sample_rng(seed, epoch, index)``, over a bit
    generator shared with the previous calls: it is valid until the next call, which is
    what a transform needs (it must not keep its ``rng`` for later records).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._bit_generator = np.random.Philox(key=0)
        self._epoch: int | None = None
        self._key = 0

    def __call__(self, epoch: int, index: int) -> np.random.Generator:
        if epoch != self._epoch:
            self._epoch, self._key = epoch, epoch_key(self.seed, epoch)
        self._bit_generator.state = {
            "bit_generator": "Philox",
            "state": {
                "counter": np.zeros(4, dtype=np.uint64),
                "key": np.array([self._key, index], dtype=np.uint64),
            },
            "buffer": np.zeros(4, dtype=np.uint64),
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
        return np.random.Generator(self._bit_generator)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit integer seed for the global RNGs around record ``index`` (see :class:`GlobalRNGs`)."""
    return _keys.sample_seed(seed, epoch, index)


class GlobalRNGs:
    """Saves the global RNG states on enter, seeds them per sample, restores them on exit.

    ``with GlobalRNGs() as g: g.seed(s); ...`` leaves python ``random``, ``np.random`` and
    torch's CPU generator exactly as they were before the block, whatever the block drew.
    Saving once around a batch instead of once per sample keeps the cost per sample to
    the seeding alone.
    """

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._saved: tuple[Any, Any, Any] | None = None

    def __enter__(self) -> GlobalRNGs:
        self._saved = (random.getstate(), np.random.get_state(), self._torch.get_rng_state())
        return self

    def seed(self, value: int) -> None:
        """Seed the three global generators from one 64-bit value."""
        value &= (1 << 64) - 1
        random.seed(value)
        # all 64 bits reach numpy: a 32-bit seed would give thousands of records the same
        # "random" augmentation in a dataset of a few hundred thousand
        # (a uint32 array seeds the same state as the list, without its conversion: ~2x
        # faster, and this runs once per record)
        np.random.seed(np.array([value & 0xFFFFFFFF, value >> 32], dtype=np.uint32))
        # the CPU generator only: torch.manual_seed would also touch every accelerator,
        # at ~100x the cost, and workers never draw from those
        self._torch.default_generator.manual_seed(value)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._saved is not None
        python_state, numpy_state, torch_state = self._saved
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        self._torch.set_rng_state(torch_state)
        self._saved = None
