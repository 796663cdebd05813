"""Force one way of computing the shuffled order's Feistel rounds (tests of their bits).

:class:`epochal.order.ShuffledOrder` hashes each round, or looks it up in its round tables
(built from the same hash) when a call is large enough; both must give the same bits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

from epochal.order import ShuffledOrder

ROUNDS = ("hashed", "tables")


@contextlib.contextmanager
def rounds(way: str) -> Iterator[None]:
    """Within the block, every order call hashes its rounds (``"hashed"``) or looks them up
    (``"tables"``, where the order has tables: ``n <= 2**28``), whatever its size."""
    assert way in ROUNDS, way
    if way == "hashed":
        tables_for = lambda self, size: None  # noqa: E731
    else:
        tables_for = lambda self, size: self.round_tables()  # noqa: E731
    with mock.patch.object(ShuffledOrder, "_tables_for", tables_for):
        yield
