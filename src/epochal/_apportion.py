"""Apportionment: whole numbers in given proportions that add up to a total.

Shared by :func:`epochal.split` (subset sizes) and :func:`epochal.mix` (schedule slots
when the proportions are not exact at the largest period).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["largest_remainder"]


def largest_remainder(fractions: Sequence[float], total: int) -> list[int]:
    """Integers proportional to ``fractions`` that sum to ``total`` (Hamilton's method)."""
    scale = sum(fractions)
    quotas = [f / scale * total for f in fractions]
    sizes = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (sizes[i] - quotas[i], i))
    for i in by_remainder[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes
