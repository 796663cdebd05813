"""How many examples a property test draws: all of them in CI, a fifth in the quick run.

``pytest -m "not slow"`` (the contributor's quick run, see tests/conftest.py) sets
:data:`QUICK` before any test module is imported; CI runs the README's command, without
``-m``, and so every property test draws its full number of examples there.
"""

from __future__ import annotations

QUICK = False
"""True under ``-m "not slow"``: set by ``pytest_configure`` in tests/conftest.py."""

_QUICK_SHARE = 5  # the quick run draws one example in this many
_QUICK_FLOOR = 5  # and never fewer than this many per test


def examples(n: int) -> int:
    """The ``max_examples`` for a property test that draws ``n`` examples in CI."""
    return max(min(n, _QUICK_FLOOR), n // _QUICK_SHARE) if QUICK else n
