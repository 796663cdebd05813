"""Bounds checks of record indices, shared by every source that takes an array of them."""

from __future__ import annotations

from typing import Any

import numpy as np

from epochal._errors import OutOfRangeError

__all__ = ["check_indices"]


def check_indices(indices: Any, n: int, message: str) -> np.ndarray:
    """``indices`` as a flat int64 array, if every one is in ``[0, n)``; else an IndexError.

    One pass for both ends: negative indices wrap around to huge unsigned values. The
    error is ``message.format(bad=..., n=n)``, built only when an index is out of range.
    """
    array = np.asarray(indices, dtype=np.int64).reshape(-1)
    if array.size and int(array.view(np.uint64).max()) >= n:
        bad = int(array[(array < 0) | (array >= n)][0])
        raise OutOfRangeError(message.format(bad=bad, n=n))
    return array
