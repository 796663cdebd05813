"""Parse an input's parts in a process pool and hand the blocks back in input order.

``epochal build --workers N`` uses this: the standard library's process pool runs the
CPU-heavy part (JSON parsing, Arrow-to-row conversion, reading images, checking every
value against the schema) on ``N`` cores, and the parent writes the blocks in order, cut
into shards exactly where a one-process build cuts them, so the store is the same one
(same shards, same fingerprint). At most ``2 * N`` parts are in flight, so memory stays
bounded however long the input is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from epochal._errors import InvalidValueError
from epochal.store._errors import StoreError
from epochal.store._format import Column
from epochal.store._ingest import Part
from epochal.store._record_blocks import Block, from_records

__all__ = ["default_workers", "parallel_blocks"]


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Redo:
    """A worker's answer for a part whose records do not fit the schema.

    Only the parent knows how many records came before the part, so it encodes the part
    again itself and raises the error a one-process build raises, record number and all.
    """


def _encode(part: Part, columns: tuple[Column, ...]) -> Block | _Redo:
    records = list(part())  # errors reading the input pass through as they are
    try:
        return from_records(records, columns)
    except StoreError:
        return _Redo()


def parallel_blocks(parts: Iterable[Part], workers: int) -> Iterator[Block]:
    """The parts' records as blocks, in order, parsed by ``workers`` processes.

    The first non-empty part is parsed here: its first record fixes the columns, which
    every later part is checked against value by value (as the row writer checks every
    record against record 0). The pool starts only if there is a second part.
    """
    if workers < 1:
        raise InvalidValueError(f"workers must be at least 1, got {workers}")
    it = iter(parts)
    columns: tuple[Column, ...] | None = None
    done = 0  # records yielded so far
    for part in it:
        block = from_records(part(), None)
        if len(block):
            columns = block.columns
            done += len(block)
            yield block
            break
    if columns is None:
        return
    if workers == 1:
        for part in it:
            block = from_records(part(), columns, first=done)
            done += len(block)
            yield block
        return
    # fork: workers start in milliseconds and inherit the imported modules; they only parse
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        window: deque[tuple[Part, Future[Block | _Redo]]] = deque()

        def ready() -> Block:
            nonlocal done
            part, future = window.popleft()
            block = future.result()
            if isinstance(block, _Redo):
                from_records(part(), columns, first=done)  # raises the error, numbered
                raise AssertionError(f"part {part} failed in a worker but not here")
            done += len(block)
            return block

        try:
            for part in it:
                window.append((part, pool.submit(_encode, part, columns)))
                if len(window) >= 2 * workers:
                    yield ready()
            while window:
                yield ready()
        finally:
            for _, future in window:
                future.cancel()
