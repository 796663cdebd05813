"""The remote cache's prefetch: windows scheduled ahead, batch misses fetched concurrently.

:class:`Prefetch` is the part of :class:`~epochal.store._remote.ShardCache` that turns the
record ranges a windowed loader schedules into runs of units (adjacent granules of a shard
in a window become one run: one range request) and fetches them on a thread pool in the
main process, the first batch's first; a batch's misses are fetched concurrently too (in
workers as well), each run under its units' locks so nothing is downloaded twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from epochal.store._blocks import ShardHead
from epochal.store._cache_files import CacheTooSmallError, DiskBound, _NoRoom
from epochal.store._format import Manifest

if TYPE_CHECKING:
    from epochal.store._remote import _ProcessState

__all__ = ["COALESCE_GAP", "COALESCE_WASTE", "PREFETCH_THREADS", "Prefetch", "coalesces"]

PREFETCH_THREADS = 16  # range GETs in flight: object stores reward parallel requests
# A window's runs of granules in one shard with a gap of unwanted granules between them are
# one range GET (coalesced) when the gap is at most COALESCE_GAP bytes and the request's
# gaps together at most 1/COALESCE_WASTE of its wanted bytes: requests cost more than
# bytes, but bytes per epoch must stay within 1.1x of the store
COALESCE_GAP = 4 << 20
COALESCE_WASTE = 10


def coalesces(gap: int, wasted: int, wanted: int) -> bool:
    """Whether a run ``gap`` bytes past a request of ``wanted`` bytes (``wasted`` of them
    gaps already) joins that request, ``wanted`` counting the new run's bytes too."""
    return gap == 0 or (gap <= COALESCE_GAP and (wasted + gap) * COALESCE_WASTE <= wanted)


_log = logging.getLogger("epochal.store")


class Prefetch(DiskBound):
    """Scheduled windows and batch misses, fetched concurrently (a base of ``ShardCache``)."""

    manifest: Manifest
    blocks: bool
    _g: np.ndarray
    _unit_base: np.ndarray

    # ShardCache's
    def _local(self) -> _ProcessState:
        raise NotImplementedError

    def unit_path(self, k: int, u: int) -> str:
        raise NotImplementedError

    def head(self, k: int) -> ShardHead:
        raise NotImplementedError

    def ensure(self, k: int, u: int) -> str:
        raise NotImplementedError

    def _fetch_granules(self, k: int, units: list[int], *, window: int | None) -> None:
        raise NotImplementedError

    def units_of(self, ranges: np.ndarray, starts: np.ndarray) -> list[tuple[int, int, int]]:
        """Record ranges -> runs (shard, first unit, stop unit), in reading order."""
        runs: list[tuple[int, int, int]] = []
        for start, stop in np.asarray(ranges, dtype=np.int64).reshape(-1, 2).tolist():
            if stop <= start:
                continue
            k = int(np.searchsorted(starts, start, side="right")) - 1
            while k < len(self.manifest.shards) and int(starts[k]) < stop:
                a = max(start, int(starts[k])) - int(starts[k])
                b = min(stop, int(starts[k + 1])) - int(starts[k])
                if b > a:
                    g = int(self._g[k])
                    runs.append((k, a // g, -(-b // g)))
                k += 1
        return runs

    def schedule(self, ranges: np.ndarray, starts: np.ndarray, *, window: int) -> None:
        """Pin the units of ``ranges`` for ``window`` and fetch them on the prefetch pool."""
        state = self._local()
        if window <= state.retired or window in state.windows:
            return
        runs = self.units_of(ranges, starts)
        ids = [self.unit_id(k, u) for k, u0, u1 in runs for u in range(u0, u1)]
        state.windows[window] = np.unique(np.array(ids, dtype=np.int64))
        need = self.scheduled_bytes(window)
        if need > self.max_bytes:
            del state.windows[window]
            raise CacheTooSmallError(
                f"cache_size {self.max_bytes} bytes is too small for window {window} of {self.loc.url}: "
                f"its units take about {need} bytes; use at least {need} bytes (a windowed Loader "
                f"needs room for about three windows)"
            )
        self._write_pins(state)
        if state.pool is None:
            state.pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="epochal-prefetch")
        futures = state.futures.setdefault(window, [])
        # the window's missing units per shard, each with when it is first read: blocks
        # next to each other in a shard (from different ranges of the window) become one
        # run, one range request per column, since requests and not bytes cost the most
        first: dict[tuple[int, int], int] = {}
        for k, u0, u1 in runs:
            for u in range(u0, u1):
                first.setdefault((k, u), len(first))
        missing = sorted(ku for ku in first if not os.path.exists(self.unit_path(*ku)))
        # (first read, shard, units, gap units): runs of a shard with small gaps between
        # them coalesce into one task, which _fetch_granules fetches as one range GET
        tasks: list[tuple[int, int, list[int], int]] = []
        unit = self._unit_bytes()
        for k, u in missing:
            if tasks and tasks[-1][1] == k:
                at, _, units, gaps = tasks[-1]
                gap = u - units[-1] - 1
                size = int(unit[k])
                if coalesces(gap * size, gaps * size, (len(units) + 1) * size):
                    units.append(u)
                    tasks[-1] = (min(at, first[k, u]), k, units, gaps + gap)
                    continue
            tasks.append((first[k, u], k, [u], 0))
        for _, k, units, _ in sorted(tasks):  # what the first batch reads first
            futures.append(state.pool.submit(self._prefetch, k, units, window))

    def _fetch_run(self, k: int, units: list[int], window: int | None) -> None:
        """Fetch the missing ones of granules ``units`` (sorted) of shard ``k`` under their
        locks; for a window (``window`` set) runs with small gaps between them are one request."""
        if not self.blocks:
            self.ensure(k, 0)
            return
        self.head(k)  # before the units' locks: see _unit_locks
        with self._unit_locks(k, units):
            missing = [u for u in units if not os.path.exists(self.unit_path(k, u))]
            if missing:
                self._fetch_granules(k, missing, window=window)

    def _ensure_batch(self, pairs: list[tuple[int, int]]) -> None:
        """Fetch every missing unit a batch reads: heads first, then one task per run of
        contiguous granules (one range request per column), all concurrently."""
        state = self._local()
        if state.demand is None:
            state.demand = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="epochal-fetch")
        if self.blocks:
            heads = sorted({k for k, _ in pairs} - state.heads.keys())
            list(state.demand.map(self.head, heads))
        missing = [(k, u) for k, u in pairs if not os.path.exists(self.unit_path(k, u))]
        runs: list[tuple[int, list[int]]] = []
        for k, u in missing:
            if runs and runs[-1][0] == k and runs[-1][1][-1] + 1 == u:
                runs[-1][1].append(u)
            elif not runs or runs[-1][0] != k or self.blocks:
                runs.append((k, [u]))
        if len(runs) == 1:
            self._fetch_run(*runs[0], None)
        elif runs:
            list(state.demand.map(lambda run: self._fetch_run(run[0], run[1], None), runs))

    def _prefetch(self, k: int, units: list[int], window: int) -> None:
        state = self._local()
        if window <= state.retired:
            return
        try:
            self._fetch_run(k, units, window)
        except _NoRoom:
            pass  # fetched on demand once its window is the current one
        except Exception:  # the read that needs it fetches again and raises the real error
            _log.debug("prefetch of shard %s units %s failed", k, units, exc_info=True)

    def retire(self, *, window: int) -> None:
        """Units scheduled only for windows <= ``window`` may be evicted from now on."""
        state = self._local()
        state.retired = max(state.retired, window)
        for w in [w for w in state.windows if w <= window]:
            del state.windows[w]
        for w in [w for w in state.futures if w <= window]:
            for future in state.futures.pop(w):
                future.cancel()
        self._write_pins(state)

    def _unit_bytes(self) -> np.ndarray:
        """Per shard, the bytes of one of its units (estimated from the manifest)."""
        sizes = np.array([s.bytes for s in self.manifest.shards], dtype=np.int64)
        return sizes // np.diff(self._unit_base)

    def scheduled_bytes(self, window: int) -> int:
        """Bytes of the units pinned for ``window`` (estimated from the manifest)."""
        ids = self._local().windows.get(window)
        if ids is None or not len(ids):
            return 0
        k = np.searchsorted(self._unit_base, ids, side="right") - 1
        return int(self._unit_bytes()[k].sum())

    def close(self) -> None:
        """Stop prefetching and drop this process's schedule."""
        state = self._local()
        for pool in (state.pool, state.demand):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        state.pool = state.demand = None
        state.windows.clear()
        state.futures.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, f".pins-{os.getpid()}.npy"))
