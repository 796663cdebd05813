"""Batch requests: the plan's positions of a pass, through the epoch's order, batch by batch.

:class:`BatchRequests` is the batch sampler the Loader gives ``torch.utils.data.DataLoader``
(or iterates itself without workers). It lives in the main process and yields one
:class:`Request` per batch of the current pass: the epoch, the batch's record indices and
how many of them are padded repeats, which is all a worker needs to build the batch.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from itertools import repeat
from typing import NamedTuple

import numpy as np

from epochal._windows import WindowFeed
from epochal.order import Order
from epochal.plan import Plan

__all__ = ["BatchRequests", "Request"]

_ORDER_BLOCK = 65_536  # positions whose order the batch sampler computes in one call


class Request(NamedTuple):
    """What the batch sampler sends to a worker: everything needed to build one batch."""

    epoch: int
    indices: np.ndarray
    repeats: int


_new_request = functools.partial(tuple.__new__, Request)  # (epoch, indices, repeats) -> Request


class BatchRequests:
    """Yields one :class:`Request` per batch of the current pass; lives in the main process."""

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.order: Order | None = None
        self.epoch = 0
        self.feed: WindowFeed | None = None  # windowed reads: tells the source what comes next

    def __iter__(self) -> Iterator[Request]:
        plan, order, epoch, feed = self.plan, self.order, self.epoch, self.feed
        assert plan is not None and order is not None
        # the order is computed for a block of batches at once: one vectorised call per
        # ~64K positions instead of one per batch keeps its cost per index near the
        # vectorised one (~5 ns compiled, ~20 in numpy; the cycle walk's last passes cost
        # the same per call however few values they hold; the first block is one batch, so
        # the first batch of a pass comes at once)
        block = max(1, _ORDER_BLOCK // plan.batch_size)
        full = plan.full_batches
        # a sampler's order may be any object with index(); epochal's orders also take ranges
        index_range = getattr(order, "index_range", None)
        starts = itertools.chain([0], range(1, len(plan), block)) if len(plan) else ()
        for first in starts:
            stop = min(len(plan), first + (1 if first == 0 else block))
            if first < full:
                span = None
                if feed is None and index_range is not None:
                    span = plan.full_range(first, min(stop, full))
                if (
                    span is not None and index_range is not None
                ):  # one rank: the block's positions are one range
                    rows = index_range(*span).reshape(-1, plan.batch_size)
                else:
                    positions = plan.full_positions(first, min(stop, full))
                    rows = order.index(positions.ravel()).reshape(positions.shape)
                if feed is None:
                    # tuple.__new__ builds each Request in C (Request(...) and _make run a
                    # Python frame per batch)
                    yield from map(_new_request, zip(repeat(epoch), rows, repeat(0)))
                else:
                    for batch_positions, batch_indices in zip(positions, rows):
                        feed.before(batch_positions)
                        yield Request(epoch, batch_indices, 0)
            for k in range(max(first, full), stop):  # the final partial batch, if any
                if feed is not None:
                    feed.before(plan.positions(k))
                yield Request(epoch, order.index(plan.positions(k)), plan.repeats(k))

    def __len__(self) -> int:
        return 0 if self.plan is None else len(self.plan)
