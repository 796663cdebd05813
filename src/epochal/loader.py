"""Loader: the data path composed - order, plan, fetch, per-sample randomness, collate.

``torch.utils.data.DataLoader`` does the worker processes, pinning and prefetching; epochal
gives it a batch sampler that turns the plan's positions into record indices through the
epoch's order, and a fetcher that reads a whole batch at once (``get_columns`` or
``get_many`` when the source has them), runs the transform with each record's own
generator, and collates. The DataLoader gets a private ``torch.Generator``, so iterating
never draws from the caller's global torch RNG (a resumed run would otherwise draw once
more than the uninterrupted one and diverge).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data._utils.pin_memory import pin_memory

from epochal._errors import Error, StateError
from epochal._windows import EpochWindows, WindowedOrder, WindowFeed, WindowLayout
from epochal.order import Order, make_order
from epochal.plan import Plan
from epochal.rng import GlobalRNGs, SampleRNGs, sample_seed
from epochal.sources._protocol import fingerprint_of, get_many, is_batched

if TYPE_CHECKING:
    from epochal.sampling import Sampler

__all__ = ["STATE_KEYS", "STATE_VERSION", "Loader", "collate"]

STATE_VERSION = 1
STATE_KEYS = (
    "version",
    "seed",
    "epoch",
    "position",
    "num_records",
    "fingerprint",
    "world_size",
    "global_batch_size",
    "shuffle",
    "drop_last",
    "windows",
)
WINDOWS_KEY = "windows"  # the current epoch's windowed-order layout, None for the plain order
SAMPLER_KEY = "sampler"  # only in the states of loaders with a sampler: its description
INDEX_KEY = "_index"  # with_index=True: the record index of each sample
_ORDER_BLOCK = 65_536  # positions whose order the batch sampler computes in one call
REPEAT_KEY = "_repeat"  # with_index=True: True for the padded repeats of an epoch's last batch

Transform = Callable[[Any, np.random.Generator], Any]


class _Request(NamedTuple):
    """What the batch sampler sends to a worker: everything needed to build one batch."""

    epoch: int
    indices: np.ndarray
    repeats: int


class _BatchSampler:
    """Yields one :class:`_Request` per batch of the current pass; lives in the main process."""

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.order: Order | None = None
        self.epoch = 0
        self.feed: WindowFeed | None = None  # windowed reads: tells the source what comes next

    def __iter__(self) -> Iterator[_Request]:
        plan, order, epoch, feed = self.plan, self.order, self.epoch, self.feed
        assert plan is not None and order is not None
        # the order is computed for a block of batches at once: one vectorised call per
        # ~64K positions instead of one per batch keeps its cost per index near ~25 ns
        # (the cycle walk's last passes cost the same per call however few values they
        # hold; the first block is one batch, so the first batch of a pass comes at once)
        block = max(1, _ORDER_BLOCK // plan.batch_size)
        full = plan.full_batches
        starts = itertools.chain([0], range(1, len(plan), block)) if len(plan) else ()
        for first in starts:
            stop = min(len(plan), first + (1 if first == 0 else block))
            if first < full:
                positions = plan.full_positions(first, min(stop, full))
                rows = order.index(positions.ravel()).reshape(positions.shape)
                for batch_positions, batch_indices in zip(positions, rows):
                    if feed is not None:
                        feed.before(batch_positions)
                    yield _Request(epoch, batch_indices, 0)
            for k in range(max(first, full), stop):  # the final partial batch, if any
                if feed is not None:
                    feed.before(plan.positions(k))
                yield _Request(epoch, order.index(plan.positions(k)), plan.repeats(k))

    def __len__(self) -> int:
        return 0 if self.plan is None else len(self.plan)


def _to_tensor(value: Any) -> Any:
    """A numeric numpy column becomes a tensor that owns its memory; anything else stays."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if not value.flags.writeable or not value.flags.c_contiguous:
            value = np.array(value)
        return torch.from_numpy(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return value.tolist()
    return value


def collate(records: list[Any]) -> Any:
    """Stack a list of records into a batch.

    Dict records become a dict of columns: numeric values (numpy arrays, numpy scalars,
    Python numbers) are stacked into one tensor per column, tensors with ``torch.stack``,
    anything else (bytes, strings, objects) is kept as a list. Other records go through
    ``torch.utils.data.default_collate``.
    """
    if not records or not isinstance(records[0], Mapping):
        return torch.utils.data.default_collate(records)
    batch: dict[str, Any] = {}
    for key in records[0]:
        values = [record[key] for record in records]
        first = values[0]
        if isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, (np.ndarray, np.generic, int, float)) and not isinstance(
            first, bool
        ):
            stacked = np.stack(values) if isinstance(first, np.ndarray) else np.asarray(values)
            batch[key] = _to_tensor(stacked)
        else:
            batch[key] = values
    return batch


def _identity(batch: Any) -> Any:
    return batch


class _Fetcher:
    """Builds a whole batch from a :class:`_Request`; runs in the DataLoader's workers."""

    def __init__(
        self,
        source: Any,
        *,
        seed: int,
        transform: Transform | None,
        seed_globals: bool,
        with_index: bool,
        collate_fn: Callable[[list[Any]], Any] | None,
    ) -> None:
        self.source = source
        self.seed = seed
        self.transform = transform
        self.with_index = with_index
        self.collate_fn = collate_fn or collate
        self.deterministic = bool(getattr(source, "deterministic", False))
        self.seed_globals = seed_globals and (transform is not None or not self.deterministic)
        self.columnar = (
            transform is None
            and collate_fn is None
            and not self.seed_globals
            and callable(getattr(source, "get_columns", None))
        )
        self._n = len(source)
        self._rngs = SampleRNGs(seed)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        raise TypeError("epochal's fetcher builds whole batches; it is only called with batches")

    def __getitems__(self, request: _Request) -> Any:
        if self.columnar:
            columns = self.source.get_columns(request.indices)
            batch = {name: _to_tensor(column) for name, column in columns.items()}
        else:
            batch = self.collate_fn(self._records(request))
        if self.with_index:
            if not isinstance(batch, dict):
                raise Error(
                    f"with_index=True needs batches that are dicts of columns, got "
                    f"{type(batch).__name__}; return dict records from the source/transform"
                )
            repeat = torch.zeros(len(request.indices), dtype=torch.bool)
            if request.repeats:
                repeat[-request.repeats :] = True
            batch[INDEX_KEY] = torch.from_numpy(request.indices.copy())
            batch[REPEAT_KEY] = repeat
        return batch

    def _records(self, request: _Request) -> list[Any]:
        epoch, indices = request.epoch, request.indices.tolist()
        if not self.seed_globals:
            records = get_many(self.source, request.indices)
            return [self._transform(r, epoch, i) for r, i in zip(records, indices)]
        with GlobalRNGs() as global_rngs:
            batch_read: list[Any] | None = None
            if self.deterministic or is_batched(self.source):
                if not self.deterministic:
                    # the dataset reads the whole batch in one call, so the global RNGs can
                    # only be seeded once around it, from the batch's first record
                    global_rngs.seed(sample_seed(self.seed, epoch, indices[0]))
                batch_read = get_many(self.source, request.indices)
            out = []
            for j, index in enumerate(indices):
                global_rngs.seed(sample_seed(self.seed, epoch, index))
                record = self.source[index] if batch_read is None else batch_read[j]
                out.append(self._transform(record, epoch, index))
            return out

    def _transform(self, record: Any, epoch: int, index: int) -> Any:
        if self.transform is None:
            return record
        return self.transform(record, self._rngs(epoch, index))


def _start_worker(worker_id: int) -> None:
    """Worker start-up: batches travel through named shared memory ("file_system"), which
    the main process opens by name, instead of a file descriptor per tensor passed over a
    socket after an authentication handshake (about 0.5 ms of both processes' time per
    tensor, per batch). Only this worker's setting changes; torch's shared-memory manager
    removes the segments even after a SIGKILL."""
    import torch.multiprocessing

    if "file_system" in torch.multiprocessing.get_all_sharing_strategies():
        torch.multiprocessing.set_sharing_strategy("file_system")


def _topology(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    world_size = 1 if world_size is None else int(world_size)
    rank = 0 if rank is None else int(rank)
    if world_size < 1:
        raise Error(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise Error(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


class Loader:
    """Shuffled, sharded, exactly resumable batches of a Source.

    Iterating the loader runs the rest of the current epoch and then advances
    :attr:`epoch`. The order of epoch ``e`` is a keyed permutation of the records from
    ``(seed, e)``; global batch ``g`` takes positions ``[g*G, (g+1)*G)`` of it, with
    ``G = batch_size * world_size``, and each rank its slice. A transform gets each
    record's own generator ``sample_rng(seed, epoch, index)``, so results do not depend on
    the worker, the rank or ``num_workers``.

    State contract: :meth:`state_dict` returns a small JSON-serialisable dict with the keys
    of :data:`STATE_KEYS`: ``version``; ``seed``, ``shuffle`` and ``drop_last``;
    ``epoch``; ``position``, the samples of this epoch delivered to the caller by all ranks
    together (prefetched batches not yet delivered are not counted and are fetched again
    after a resume); the dataset's ``num_records`` and ``fingerprint``; and the topology it
    was taken under (``world_size``, ``global_batch_size``). :meth:`load_state_dict` is
    O(1); it refuses a state of another version, dataset, seed or shuffle setting with a
    :class:`epochal.StateError` that names both values, and accepts another world size,
    batch size or worker count: the position counts samples, so the rest of the epoch is
    neither repeated nor skipped. Future versions may add keys; a load never guesses a
    missing one. A loader with a sampler (weighted sampling, a mixture) adds the key
    ``"sampler"``, the sampler's description, and refuses a state taken with another
    sampler (or without one); ``position`` then counts the sampler's positions.
    ``"windows"`` is the current epoch's windowed-order layout (None for the plain order):
    a source that reads a store larger than its cache gives a read hint, and with
    ``shuffle=True`` and no sampler the loader then reads it window by window (see
    :mod:`epochal._windows` and :meth:`describe`). A load keeps the state's layout for the
    rest of its epoch, on any topology (exact; only the byte saving degrades); the next
    epoch chooses anew. A state without ``"windows"`` predates windowed orders and is
    loaded as a plain-order state.

    Args:
        source: a Source (``__len__``, ``__getitem__``; see :class:`epochal.Source`).
        batch_size: samples per batch on each rank.
        shuffle: a new global shuffle every epoch; False keeps the source order.
        seed: the run's seed, in ``[0, 2**64)``; fixes the order and the per-sample randomness.
        transform: ``f(record, rng) -> record``, run in the workers with the record's own
            ``numpy.random.Generator``.
        num_workers: DataLoader worker processes (0 loads in the calling process).
        drop_last: drop the final partial global batch; otherwise it is split over the
            ranks with the fewest possible repeats (see :class:`epochal.Plan`).
        rank: this process's rank; defaults to torch.distributed's, else 0.
        world_size: number of ranks; defaults to torch.distributed's, else 1.
        seed_globals: also seed python ``random``, ``np.random`` and torch's CPU RNG from
            the record's key around each read and transform, restoring them afterwards
            (cures legacy ``np.random`` augmentations, P6).
        with_index: add ``"_index"`` (record indices) and ``"_repeat"`` (True for padded
            repeats) to every batch; batches must be dicts.
        pin_memory: pin batches in page-locked memory (DataLoader's option).
        prefetch_factor: batches prefetched per worker (DataLoader's option).
        persistent_workers: keep worker processes between epochs (when ``num_workers > 0``).
        collate_fn: turns a list of records into a batch; defaults to :func:`collate`.
        multiprocessing_context: start method for workers (DataLoader's option).
        timeout: seconds to wait for a batch from a worker (0 waits forever).
        sampler: maps each epoch's positions to record indices instead of the plain
            shuffle (:class:`epochal.WeightedSampler`, :func:`epochal.balanced`); it fixes
            the positions per epoch. Defaults to the source's own ``sampler`` attribute
            when it has one (:func:`epochal.mix`), else the shuffled order.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        transform: Transform | None = None,
        num_workers: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        seed_globals: bool = True,
        with_index: bool = False,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        persistent_workers: bool = True,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        multiprocessing_context: Any = None,
        timeout: float = 0.0,
        sampler: Sampler | None = None,
    ) -> None:
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise Error(
                f"Loader needs a source with __len__ and __getitem__, got {type(source).__name__}; "
                f"use epochal.from_arrays(...), epochal.from_dataset(...) or epochal.open(...)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise Error(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise Error(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if not isinstance(seed, int) or not 0 <= seed < 1 << 64:
            raise Error(f"seed must be an integer in [0, 2**64), got {seed!r}")
        if transform is not None and not callable(transform):
            raise Error(f"transform must be callable as f(record, rng), got {transform!r}")
        self.source = source
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.num_workers = num_workers
        self.rank, self.world_size = _topology(rank, world_size)
        self.num_records = len(source)
        if self.num_records < 1:
            raise Error("the source is empty; a Loader needs at least one record")
        self.sampler = sampler if sampler is not None else getattr(source, "sampler", None)
        if self.sampler is not None and self.sampler.num_records != self.num_records:
            raise Error(
                f"the sampler indexes {self.sampler.num_records} records but the source has "
                f"{self.num_records}; build the sampler from this source's records"
            )
        self.samples_per_epoch = self.num_records if self.sampler is None else len(self.sampler)
        if self.drop_last and self.samples_per_epoch < self.global_batch_size:
            raise Error(
                f"drop_last=True with {self.samples_per_epoch} samples per epoch and a global "
                f"batch of "
                f"{self.global_batch_size} (batch_size {batch_size} x world_size "
                f"{self.world_size}) would yield no batch; lower batch_size or set drop_last=False"
            )
        self.fingerprint = fingerprint_of(source)
        self._epoch = 0
        self._position = 0
        self._generation = 0
        self._sampler = _BatchSampler()
        self._windows = EpochWindows()
        self._fetcher = _Fetcher(
            source,
            seed=seed,
            transform=transform,
            seed_globals=seed_globals,
            with_index=with_index,
            collate_fn=collate_fn,
        )
        # pinning needs an accelerator; without one it would only cost a copy
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        # A memory gather (from_arrays, the local store's fixed-width columns) is cheaper
        # than moving its result between processes (~2 ms for a 768 KiB batch through shared
        # memory), so such batches are read in this process; workers run per-record work.
        self.uses_workers = num_workers > 0 and not (
            self._fetcher.columnar and getattr(source, "fast_gather", False)
        )
        self._dataloader: torch.utils.data.DataLoader | None = None
        if self.uses_workers:
            self._dataloader = torch.utils.data.DataLoader(
                self._fetcher,  # type: ignore[arg-type]
                batch_sampler=self._sampler,  # type: ignore[arg-type]
                num_workers=num_workers,
                collate_fn=_identity,
                worker_init_fn=_start_worker,
                pin_memory=pin_memory,
                # a private generator: creating an iterator never draws from the global RNG
                generator=torch.Generator().manual_seed(seed & (1 << 63) - 1),
                persistent_workers=persistent_workers,
                prefetch_factor=prefetch_factor,
                multiprocessing_context=multiprocessing_context,
                timeout=timeout,
            )

    @property
    def epoch(self) -> int:
        """The current epoch: the one the next pass runs (the rest of)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Samples of the current epoch delivered so far, counted over all ranks."""
        return self._position

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def plan(self) -> Plan:
        """This rank's plan for the rest of the current epoch."""
        return Plan(
            num_records=self.samples_per_epoch,
            batch_size=self.batch_size,
            world_size=self.world_size,
            rank=self.rank,
            drop_last=self.drop_last,
            start=self._position,
        )

    def __len__(self) -> int:
        """Batches the next pass yields: the rest of the current epoch on this rank."""
        return len(self.plan())

    @property
    def batches_per_epoch(self) -> int:
        """Batches a whole epoch yields on each rank."""
        return len(dataclasses.replace(self.plan(), start=0))

    @property
    def repeats_per_epoch(self) -> int:
        """Samples a whole epoch delivers twice over all ranks (``drop_last=False`` only)."""
        return dataclasses.replace(self.plan(), start=0).total_repeats

    def __iter__(self) -> Iterator[Any]:
        self._generation += 1
        generation = self._generation
        plan = self.plan()
        self._sampler.plan = plan
        layout = self._window_layout()
        if layout is not None:
            order: Order = WindowedOrder(layout, seed=self.seed, epoch=self._epoch)
        elif self.sampler is None:
            order = make_order(
                self.num_records, seed=self.seed, epoch=self._epoch, shuffle=self.shuffle
            )
        else:
            order = self.sampler.order(seed=self.seed, epoch=self._epoch, shuffle=self.shuffle)
        self._sampler.order = order
        self._sampler.feed = None
        if isinstance(order, WindowedOrder):
            self._sampler.feed = WindowFeed(self.source, order, plan, self._windows.ids)
        self._sampler.epoch = self._epoch
        return self._run(plan, generation)

    def _batches(self) -> Iterator[Any]:
        if self._dataloader is not None:
            yield from self._dataloader
            return
        for request in self._sampler:
            batch = self._fetcher.__getitems__(request)
            yield pin_memory(batch) if self.pin_memory else batch

    def _run(self, plan: Plan, generation: int) -> Iterator[Any]:
        for k, batch in enumerate(self._batches()):
            self._check_current(generation)
            self._position = plan.consumed(k)
            yield batch
            self._check_current(generation)
        self._check_current(generation)
        self._epoch += 1
        self._position = 0

    def _check_current(self, generation: int) -> None:
        if generation != self._generation:
            raise RuntimeError(
                "this iterator of the Loader is stale: a newer iteration, set_epoch() or "
                "load_state_dict() has moved the loader since it started"
            )

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch`` (for loops that count epochs themselves)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise Error(f"epoch must be an integer >= 0, got {epoch!r}")
        self._generation += 1
        self._epoch = epoch
        self._position = 0

    def steps(self, k: int) -> Iterator[Any]:
        """Exactly ``k`` batches from the current position, crossing epochs as needed.

        Each epoch has its own order, as with ``for batch in loader``; the state after
        ``j`` batches resumes the rest: run ``loader.steps(k - j)`` after
        :meth:`load_state_dict` to finish the same ``k`` batches.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise Error(f"steps() needs an integer k >= 0, got {k!r}")
        return self._steps(k)

    def _steps(self, k: int) -> Iterator[Any]:
        while k > 0:
            passing = iter(self)
            try:
                for batch in passing:
                    yield batch
                    k -= 1
                    if k == 0:
                        break
            finally:
                passing.close()  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        """The loader's position as a small JSON-serialisable dict (see the class docstring)."""
        state = {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": self._epoch,
            "position": self._position,
            "num_records": self.num_records,
            "fingerprint": self.fingerprint,
            "world_size": self.world_size,
            "global_batch_size": self.global_batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            WINDOWS_KEY: self._windows_state(),
        }
        if self.sampler is not None:
            state[SAMPLER_KEY] = self.sampler.state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (taken by :meth:`state_dict`, possibly on another topology).

        Raises:
            StateError: the state is malformed, from a newer version, or was taken on
                another dataset, seed or shuffle setting.
        """
        if not isinstance(state, Mapping):
            raise StateError(f"a Loader state must be a dict, got {type(state).__name__}")
        keys = STATE_KEYS if self.sampler is None else (*STATE_KEYS, SAMPLER_KEY)
        # a state without "windows" predates windowed orders: it is a plain-order state
        missing = [key for key in keys if key not in state and key != WINDOWS_KEY]
        unknown = sorted(set(state) - set(keys))
        if missing or unknown:
            hint = ""
            if SAMPLER_KEY in missing or SAMPLER_KEY in unknown:
                hint = "; a state with a sampler only loads into a loader with the same sampler"
            raise StateError(
                f"Loader state has missing keys {missing} and unknown keys {unknown}; "
                f"expected exactly {list(keys)}{hint}"
            )
        version = state["version"]
        if version != STATE_VERSION:
            newer = isinstance(version, int) and version > STATE_VERSION
            hint = "it comes from a newer epochal: upgrade" if newer else "it is damaged"
            raise StateError(
                f"Loader state version {version!r} is not supported (this epochal reads "
                f"version {STATE_VERSION}); {hint}"
            )
        for key, mine in (
            ("num_records", self.num_records),
            ("fingerprint", self.fingerprint),
            ("seed", self.seed),
            ("shuffle", self.shuffle),
            *(() if self.sampler is None else ((SAMPLER_KEY, self.sampler.state()),)),
        ):
            if state[key] != mine:
                raise StateError(
                    f"Loader state was taken with {key}={state[key]!r} but this loader has "
                    f"{key}={mine!r}: it belongs to another dataset or run"
                )
        epoch, position = state["epoch"], state["position"]
        if not isinstance(epoch, int) or epoch < 0:
            raise StateError(
                f"Loader state has an invalid epoch {epoch!r}; expected an integer >= 0"
            )
        if not isinstance(position, int) or not 0 <= position <= self.samples_per_epoch:
            raise StateError(
                f"Loader state has position {position!r}; expected an integer in "
                f"[0, {self.samples_per_epoch}]"
            )
        self._load_windows(state.get(WINDOWS_KEY), epoch=epoch)
        self._generation += 1
        self._epoch = epoch
        self._position = position

    # -- issue #11: windowed reads of stores larger than their cache --------------------------
    # The logic lives in epochal._windows; the loader only asks it for the epoch's layout.

    def _window_layout(self) -> WindowLayout | None:
        """The current epoch's windowed-order layout, or None for the plain order."""
        return self._windows.layout(
            self.source,
            epoch=self._epoch,
            usable=self.shuffle and self.sampler is None,
            num_records=self.num_records,
            batch_size=self.batch_size,
            world_size=self.world_size,
        )

    def _windows_state(self) -> dict[str, int] | None:
        self._window_layout()
        return self._windows.state()

    def _load_windows(self, value: Any, *, epoch: int) -> None:
        usable = self.shuffle and self.sampler is None
        self._windows.load(value, epoch=epoch, num_records=self.num_records, usable=usable)

    def describe(self) -> str:
        """A few lines saying how this loader reads: topology, batches, the order and, for a
        store larger than its cache, the windows it reads (blocks, sizes, mixing)."""
        if self._window_layout() is not None:
            order = self._windows.describe()
        elif self.sampler is not None:
            order = f"sampler {type(self.sampler).__name__} (shuffle={self.shuffle})"
        else:
            order = "global shuffle" if self.shuffle else "source order (shuffle=False)"
        return "\n".join(
            [
                f"Loader over {self.num_records} records ({type(self.source).__name__}), seed {self.seed}",
                f"  batches: {self.batch_size} per rank x world_size {self.world_size} (rank "
                f"{self.rank}), {self.batches_per_epoch} per epoch, drop_last={self.drop_last}",
                f"  position: epoch {self._epoch}, {self._position} samples in",
                f"  order: {order}",
            ]
        )

    def __repr__(self) -> str:
        return (
            f"Loader({self.source!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, rank={self.rank}, world_size={self.world_size}, "
            f"num_workers={self.num_workers}, epoch={self._epoch}, position={self._position})"
        )
