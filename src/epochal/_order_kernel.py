"""The shuffled order's permutation compiled with numba, when numba is installed (``fast`` extra).

The same mapping as :meth:`epochal.order.ShuffledOrder._apply` (Feistel rounds of
:func:`epochal._keys.round_hash`, then cycle walking), one element at a time in registers:
numpy needs ~42 passes over memory per element for six rounds, the compiled loop none, so
the order drops from ~20-30 ns to ~9-12 ns per index (one AVX2 core), and to ~4-7 ns with
the rounds read from the order's round tables (``ShuffledOrder.round_tables``, n <= 2**28).
The numpy path stays the definition and the fallback: tests check both give the same bits,
and ``EPOCHAL_NO_NUMBA=1`` (or numba missing) keeps the numpy path.

Nothing here imports numba until an order first asks for the kernel (``import epochal``
stays light: numba alone takes ~1 s to import). ``cache=True`` keeps the compiled code on
disk, so only the first run on a machine pays the compilation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["MIN_SIZE", "Kernels", "kernels"]

MIN_SIZE = 2_048  # a call of fewer positions never loads numba (once loaded, every call uses it)


class Kernels(NamedTuple):
    """The compiled permutations: the rounds computed, and the rounds looked up in tables."""

    permute: Callable[..., None]
    permute_range: Callable[..., None]
    permute_table: Callable[..., None]
    permute_range_table: Callable[..., None]


_kernels: Kernels | None = None
_tried = False


def kernels(size: int) -> Kernels | None:
    """The compiled :class:`Kernels`, or None when numba is missing or disabled, for a
    call on ``size`` positions: the first call of ``MIN_SIZE`` or more loads them.

    Small calls take the kernel too once it is loaded: the numpy path's cost is mostly per
    call (~45 ufunc calls per cycle-walking pass, ~0.5 ms for a batch of 256 of an order
    that walks several passes), the kernel's a few ns per position.

    ``permute(x, out, keys, low_bits, high_bits, n, inverse)`` writes the (inverse)
    permutation of every element of the integer array ``x`` into the int64 array ``out``;
    ``permute_range(start, out, keys, low_bits, high_bits, n)`` writes the order of
    positions ``start, start + 1, ...`` into ``out``. Both expect checked input (every
    value in ``[0, n)``). ``permute_table(x, out, tables, low_bits, n, inverse)`` and
    ``permute_range_table(start, out, tables, low_bits, n)`` do the same with each round's
    hash read from ``tables[r]`` (see :meth:`epochal.order.ShuffledOrder.round_tables`).
    """
    global _kernels, _tried
    if not _tried and size >= MIN_SIZE:
        _tried = True
        if os.environ.get("EPOCHAL_NO_NUMBA", "") not in ("", "0"):
            return None
        try:
            # numba is optional and slow to import: only here, when an order needs it
            from epochal import _order_numba
        except ImportError:
            _kernels = None
        else:
            _kernels = Kernels(
                _order_numba.permute,
                _order_numba.permute_range,
                _order_numba.permute_table,
                _order_numba.permute_range_table,
            )
    return _kernels
