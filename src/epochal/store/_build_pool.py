"""Parse an input's parts in a process pool and hand the blocks back in input order.

``epochal build --workers N`` uses this: the standard library's process pool runs the
CPU-heavy part (reading, JSON parsing, image resizing and re-encoding, Arrow-to-row
conversion, checking every value against the schema, building the Arrow arrays) on ``N``
cores, and the parent writes the blocks in order, cut into shards exactly where a
one-process build cuts them, so the store is the same one (same shards, same
fingerprint). At most ``4 * N`` parts are in flight (enough that a slow part does not
idle the other workers), so memory stays bounded however long the input is.

On Linux a worker hands its block over as an Arrow IPC stream in an anonymous memory file
(``memfd``), whose descriptor reaches the parent over a Unix socket that both inherit;
the parent maps it. Pickling the block and sending it down the pool's pipe instead cost
~8% of the workers' CPU on a JSONL build, plus the parent's time to read and unpickle it.
An anonymous file is freed when the last process holding it ends, so a killed build
leaves nothing behind.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from epochal._errors import InvalidValueError
from epochal.store._columns import arrow_schema
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


@dataclass(frozen=True)
class _Sent:
    """A block whose arrays went to the parent in memory file ``key`` (see ``_Channel``)."""

    key: int
    columns: tuple[Column, ...]
    sizes: np.ndarray


class _Channel:
    """Memory files from the workers to the parent: a Unix socket pair made before the
    pool forks, so every worker inherits the sending end."""

    def __init__(self) -> None:
        self.receive, self.send = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.waiting: dict[int, int] = {}  # key -> descriptor, received before it was asked for

    @staticmethod
    def available() -> bool:
        return (
            hasattr(os, "memfd_create")
            and hasattr(socket, "send_fds")
            and os.path.isdir("/proc/self/fd")
        )

    def put(self, key: int, block: Block) -> _Sent:
        """In a worker: the block's arrays into a new memory file, its descriptor to the parent."""
        fd = os.memfd_create(f"epochal-block-{key}", os.MFD_CLOEXEC)
        try:
            schema = arrow_schema(block.columns)
            batch = pa.record_batch(list(block.arrays), schema=schema)
            with (
                pa.OSFile(f"/proc/self/fd/{fd}", "wb") as out,
                pa.ipc.new_stream(out, schema) as writer,
            ):
                writer.write_batch(batch)
            socket.send_fds(self.send, [key.to_bytes(8, "little")], [fd])
        finally:
            os.close(fd)  # the message holds the file now; the parent's copy of the fd keeps it
        return _Sent(key, block.columns, block.sizes)

    def take(self, sent: _Sent) -> Block:
        """In the parent: the block of ``sent``, its arrays mapped from the worker's file."""
        while sent.key not in self.waiting:
            # sent before the worker returned its result, so it is here already
            data, fds, _, _ = socket.recv_fds(self.receive, 8, 1)
            os.set_inheritable(fds[0], False)
            self.waiting[int.from_bytes(data, "little")] = fds[0]
        fd = self.waiting.pop(sent.key)
        try:
            mapped = pa.memory_map(f"/proc/self/fd/{fd}")
            buffer = mapped.read_buffer()
            mapped.close()  # the buffer keeps the mapping
        finally:
            os.close(fd)
        batch = pa.ipc.open_stream(buffer).read_next_batch()
        return Block(sent.columns, tuple(batch.columns), sent.sizes)

    def close(self) -> None:
        for fd in self.waiting.values():
            os.close(fd)
        self.waiting.clear()
        self.receive.close()
        self.send.close()


_CHANNEL: _Channel | None = None  # a worker's sending end (set by _start_worker)


def _encode(part: Part, columns: tuple[Column, ...] | None, key: int) -> Block | _Sent | None:
    """A part's records as a block with the given columns, or those its own first record
    implies; through the channel where there is one.

    None for any failure: the parent then reads the part again itself, so that the error
    is exactly the one a one-process build raises (the first bad line or record of the
    part, numbered from the start of the input, which only the parent knows).
    """
    try:
        block = from_records(part(), columns)
    except Exception:  # re-raised, numbered, by the parent's second reading
        return None
    if _CHANNEL is None or not len(block):
        return block
    return _CHANNEL.put(key, block)


def _start_worker(parent: int, channel: _Channel | None) -> None:
    """A pool worker ends when its build does: a SIGKILLed build cannot shut its pool down,
    and its workers, each holding the task queue's pipe open for the others, would wait on
    it forever."""
    global _CHANNEL
    _CHANNEL = channel

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
    data, the Arrow batches it parsed) and receives ready Arrow blocks, which it writes;
    every part is parsed in a worker, the first one too, so the parent's serial share is
    the shard writing alone. The first non-empty block
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
    # fork: workers start in milliseconds and inherit the imported modules (and the
    # channel's socket); they only parse
    fork = "fork" in mp.get_all_start_methods()
    context = mp.get_context("fork") if fork else None
    channel = _Channel() if fork and _Channel.available() else None
    try:
        with ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(os.getpid(), channel),
        ) as pool:
            window: deque[tuple[Part, Future[Block | _Sent | None]]] = deque()

            def ready() -> Block:
                nonlocal columns, done
                part, future = window.popleft()
                result = future.result()
                block = channel.take(result) if isinstance(result, _Sent) and channel else result
                if not isinstance(block, Block) or (
                    len(block) and columns is not None and block.columns != columns
                ):
                    block = from_records(part(), columns, first=done)
                if len(block):
                    columns = block.columns
                    done += len(block)
                return block

            try:
                for key, part in enumerate(parts):
                    window.append((part, pool.submit(_encode, part, given, key)))
                    if len(window) >= 4 * workers:
                        yield ready()
                while window:
                    yield ready()
            finally:
                for _, future in window:
                    future.cancel()
    finally:
        if channel is not None:
            channel.close()
