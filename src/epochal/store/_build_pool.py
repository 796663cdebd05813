"""Parse an input's parts in a process pool and hand the blocks back in input order.

``epochal build --workers N`` uses this: the standard library's process pool runs the
CPU-heavy part (reading, JSON parsing, image resizing and re-encoding, Arrow-to-row
conversion, checking every value against the schema, building the Arrow arrays) on ``N``
cores, and the parent writes the blocks in order, cut into shards exactly where a
one-process build cuts them, so the store is the same one (same shards, same
fingerprint). At most ``4 * N`` parts are in flight (enough that a slow part does not
idle the other workers), so memory stays bounded however long the input is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from epochal._errors import InvalidValueError
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


def _encode(part: Part, columns: tuple[Column, ...] | None) -> Block | None:
    """A part's records as a block with the given columns, or those its own first record
    implies.

    None for any failure: the parent then reads the part again itself, so that the error
    is exactly the one a one-process build raises (the first bad line or record of the
    part, numbered from the start of the input, which only the parent knows).
    """
    try:
        return from_records(part(), columns)
    except Exception:  # re-raised, numbered, by the parent's second reading
        return None


def _exit_with(parent: int) -> None:
    """A pool worker ends when its build does: a SIGKILLed build cannot shut its pool down,
    and its workers, each holding the task queue's pipe open for the others, would wait on
    it forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="epochal-build-parent", daemon=True).start()


def parallel_blocks(
    parts: Iterable[Part], workers: int, columns: tuple[Column, ...] | None = None
) -> Iterator[Block]:
    """The parts' records as blocks, in order, parsed by ``workers`` processes.

    ``columns`` fixes the schema when the input does (token stores); otherwise the first
    non-empty block fixes it.

    The parent sends parts (paths, byte ranges, row-group numbers; only CSV parts carry
    data, the Arrow batches it parsed) and receives ready Arrow blocks, which it writes; every part is parsed in a worker, the first one too,
    so the parent's serial share is the shard writing alone. The first non-empty block
    fixes the columns (as record 0 does for the row writer); a later block whose own
    first record implies other columns, or a part that failed, is read again in the
    parent against the fixed columns, which raises the one-process error or gives the
    one-process block.
    """
    if workers < 1:
        raise InvalidValueError(f"workers must be at least 1, got {workers}")
    given = columns
    done = 0  # records yielded so far
    if workers == 1:
        for part in parts:
            block = from_records(part(), columns, first=done)
            if len(block):
                columns = block.columns
                done += len(block)
                yield block
        return
    # fork: workers start in milliseconds and inherit the imported modules; they only parse
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
    ) as pool:
        window: deque[tuple[Part, Future[Block | None]]] = deque()

        def ready() -> Block:
            nonlocal columns, done
            part, future = window.popleft()
            block = future.result()
            if block is None or (len(block) and columns is not None and block.columns != columns):
                block = from_records(part(), columns, first=done)
            if len(block):
                columns = block.columns
                done += len(block)
            return block

        try:
            for part in parts:
                window.append((part, pool.submit(_encode, part, given)))
                if len(window) >= 4 * workers:
                    yield ready()
            while window:
                yield ready()
        finally:
            for _, future in window:
                future.cancel()
