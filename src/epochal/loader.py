"""Loader: the data path composed - order, plan, fetch, per-sample randomness, collate.

``torch.utils.data.DataLoader`` does the worker processes, pinning and prefetching; epochal
gives it a batch sampler that turns the plan's positions into record indices through the
epoch's order (:mod:`epochal._requests`), and a fetcher that reads a whole batch at once
(``get_columns`` or ``get_many`` when the source has them), runs the transform with each
record's own generator, and collates (:mod:`epochal._fetch`). The DataLoader gets a
private ``torch.Generator``, so iterating never draws from the caller's global torch RNG
(a resumed run would otherwise draw once more than the uninterrupted one and diverge).
The order of each epoch comes from a :class:`~epochal.Sampler`, the plain keyed shuffle
(:class:`~epochal.sampling.ShuffleSampler`) unless one is given or the source brings one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data._utils.pin_memory import pin_memory

from epochal._errors import Error
from epochal._fetch import (
    Fetcher,
    Transform,
    collate,
    send_small_by_value,
    start_worker,
    start_worker_then,
)
from epochal._keys import check_seed
from epochal._loader_checks import check_dataloader_only, check_sampler, topology
from epochal._loader_state import SAMPLER_KEY, STATE_KEYS, STATE_VERSION, WINDOWS_KEY, check_state
from epochal._requests import BatchRequests
from epochal._windows import EpochWindows, WindowedOrder, WindowFeed, WindowLayout
from epochal.order import Order
from epochal.plan import Plan
from epochal.sampling import Sampler, ShuffleSampler
from epochal.sources._protocol import SampledSource, Source, fingerprint_of

__all__ = ["STATE_KEYS", "STATE_VERSION", "Loader", "collate"]


class Loader:
    """Shuffled, sharded, exactly resumable batches of a Source.

    Iterating the loader runs the rest of the current epoch; the epoch advances when its
    last batch is delivered, so a framework that stops after ``len(loader)`` batches (as
    Lightning does) gets the next epoch on its next ``iter()``. ``len(loader)`` is the
    batches of a full epoch on this rank, as with DataLoader; :attr:`batches_left` is the
    rest of the current one. An evaluation loader is built with ``full_pass=True`` (or
    :meth:`Loader.eval`): every ``iter()`` is then a complete pass of the same epoch, so a
    sanity check or a ``next(iter(loader))`` peek never eats data.

    The order of epoch ``e`` is a keyed permutation of the records from ``(seed, e)``;
    global batch ``g`` takes positions ``[g*G, (g+1)*G)`` of it, with
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
    ``"sampler"``, the sampler's identity (:meth:`epochal.Sampler.identity`), and refuses
    a state taken with another sampler (or without one); ``position`` then counts the
    sampler's positions.
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
        world_size: number of ranks; defaults to torch.distributed's, else 1. Unless both
            are given, they are read again whenever the loader plans a pass (``iter()``,
            ``len()``), so a Loader built before ``init_process_group`` (in a
            LightningModule's ``__init__``) shards correctly; a process group that appears
            after batches of an unfinished epoch were delivered is refused with an
            :class:`epochal.Error`.
        seed_globals: also seed python ``random``, ``np.random`` and torch's CPU RNG from
            the record's key around each read and transform, restoring them afterwards
            (cures legacy ``np.random`` augmentations, P6).
        with_index: add ``"_index"`` (record indices) and ``"_repeat"`` (True for padded
            repeats) to every batch; batches must be dicts.
        pin_memory: pin batches in page-locked memory (DataLoader's option).
        prefetch_factor: batches prefetched per worker (DataLoader's option).
        persistent_workers: keep worker processes between passes (when ``num_workers > 0``).
            True by default, unlike DataLoader: epochal's workers hold no state (each batch
            request carries its epoch and indices), so keeping them only saves the start-up
            of every epoch and every evaluation pass. A pass that fails (a worker killed, a
            transform error) shuts them down, and the next ``iter()`` starts fresh ones.
        collate_fn: turns a list of records into a batch; defaults to :func:`collate`.
        multiprocessing_context: start method for workers (DataLoader's option).
        timeout: seconds to wait for a batch from a worker (0 waits forever).
        sampler: maps each epoch's positions to record indices instead of the plain
            shuffle (:class:`epochal.WeightedSampler`, :func:`epochal.balanced`); it fixes
            the positions per epoch. Defaults to the source's own sampler when it is a
            ``SampledSource`` (:func:`epochal.mix`), else the plain shuffle. A torch sampler
            is refused with what replaces it (``shuffle``, :func:`epochal.subset`, an epochal
            sampler; ``DistributedSampler`` is not needed).
        full_pass: every ``iter()`` is a complete pass of the current epoch from its start,
            and the epoch does not advance (evaluation loaders; see :meth:`eval`). The state
            then always has position 0.
        worker_init_fn: called in each worker process with its id after epochal's own set-up
            (DataLoader's option; per-record randomness needs no seeding here).
        generator: refused: the order and randomness come from ``seed``.
        batch_sampler: refused: batches come from ``batch_size`` and ``drop_last``.
        in_order: only True (batches in order keep the state exact).
        pin_memory_device: refused: ``pin_memory`` pins for the current accelerator.

    DataLoader's other arguments keep their meaning; ``shuffle`` defaults to True here.
    The attributes ``batch_sampler`` (always None) and ``sampler`` (the epochal sampler, or
    None) exist for frameworks that inspect DataLoader-like objects.
    """

    batch_sampler = None  # read by Lightning on DataLoader-like objects; epochal batches itself

    def __init__(
        self,
        source: Source,
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
        full_pass: bool = False,
        worker_init_fn: Callable[[int], None] | None = None,
        generator: Any = None,
        batch_sampler: Any = None,
        in_order: bool = True,
        pin_memory_device: str = "",
    ) -> None:
        check_dataloader_only(
            generator=generator,
            batch_sampler=batch_sampler,
            in_order=in_order,
            pin_memory_device=pin_memory_device,
        )
        check_sampler(sampler)
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise Error(f"worker_init_fn must be callable as f(worker_id), got {worker_init_fn!r}")
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise Error(
                f"Loader needs a source with __len__ and __getitem__, got {type(source).__name__}; "
                f"use epochal.from_arrays(...), epochal.from_dataset(...) or epochal.open(...)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise Error(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise Error(f"num_workers must be an integer >= 0, got {num_workers!r}")
        seed = check_seed(seed)
        if transform is not None and not callable(transform):
            raise Error(f"transform must be callable as f(record, rng), got {transform!r}")
        self.source = source
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.num_workers = num_workers
        self.full_pass = bool(full_pass)
        self._rank_arg, self._world_size_arg = rank, world_size
        self._rank, self._world_size = topology(rank, world_size)
        # batches of the current epoch were delivered under (_rank, _world_size) in this
        # process: a changed topology would then shard the rest of the epoch wrongly
        self._delivered = False
        self.num_records = len(source)
        if self.num_records < 1:
            raise Error("the source is empty; a Loader needs at least one record")
        if sampler is None and isinstance(source, SampledSource):
            sampler = source.sampler
        # the public attribute is what frameworks inspect: None for the default shuffle
        self.sampler: Sampler | None = sampler
        self._order_sampler: Sampler = (
            sampler if sampler is not None else ShuffleSampler(self.num_records)
        )
        if self._order_sampler.num_records != self.num_records:
            raise Error(
                f"the sampler indexes {self._order_sampler.num_records} records but the source "
                f"has {self.num_records}; build the sampler from this source's records"
            )
        self.samples_per_epoch = len(self._order_sampler)
        self._check_batch_fits()
        self.fingerprint = fingerprint_of(source)
        self._epoch = 0
        self._position = 0
        self._generation = 0
        self._requests = BatchRequests()
        self._windows = EpochWindows()
        self._fetcher = Fetcher(
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
                self._fetcher,
                batch_sampler=self._requests,
                num_workers=num_workers,
                collate_fn=send_small_by_value,
                worker_init_fn=(
                    start_worker
                    if worker_init_fn is None
                    else functools.partial(start_worker_then, worker_init_fn)
                ),
                pin_memory=pin_memory,
                # a private generator: creating an iterator never draws from the global RNG
                generator=torch.Generator().manual_seed(seed & (1 << 63) - 1),
                persistent_workers=persistent_workers,
                prefetch_factor=prefetch_factor,
                multiprocessing_context=multiprocessing_context,
                timeout=timeout,
            )

    @classmethod
    def eval(cls, source: Any, batch_size: int, **kwargs: Any) -> Loader:
        """An evaluation loader: ``shuffle=False`` and ``full_pass=True`` unless given.

        Every ``iter()`` is a complete pass over the source in its own order (split over
        the ranks with the fewest possible repeats, flagged with ``with_index=True``), so
        a framework's sanity check or a peek never takes records from the next validation.

        Args:
            source: a Source.
            batch_size: samples per batch on each rank.
            **kwargs: any other :class:`Loader` argument.
        """
        kwargs.setdefault("shuffle", False)
        kwargs.setdefault("full_pass", True)
        return cls(source, batch_size, **kwargs)

    @property
    def epoch(self) -> int:
        """The current epoch: the one the next pass runs (the rest of)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Samples of the current epoch delivered so far, counted over all ranks."""
        return self._position

    @property
    def rank(self) -> int:
        """This process's rank (read from torch.distributed when not given)."""
        self._resolve_topology()
        return self._rank

    @property
    def world_size(self) -> int:
        """The number of ranks (read from torch.distributed when not given)."""
        self._resolve_topology()
        return self._world_size

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def _resolve_topology(self) -> None:
        """Follow torch.distributed's rank and world size, unless both were given."""
        if self._rank_arg is not None and self._world_size_arg is not None:
            return
        rank, world_size = topology(self._rank_arg, self._world_size_arg)
        if (rank, world_size) == (self._rank, self._world_size):
            return
        if self._delivered and self._position:
            raise Error(
                f"the process group changed while this Loader was in the middle of epoch "
                f"{self._epoch}: it delivered batches as rank {self._rank} of world_size "
                f"{self._world_size} and torch.distributed now says rank {rank} of "
                f"{world_size}; initialise the process group before iterating, or pass "
                f"rank= and world_size= explicitly"
            )
        self._rank, self._world_size = rank, world_size
        self._check_batch_fits()

    def _check_batch_fits(self) -> None:
        if self.drop_last and self.samples_per_epoch < self.batch_size * self._world_size:
            raise Error(
                f"drop_last=True with {self.samples_per_epoch} samples per epoch and a global "
                f"batch of {self.batch_size * self._world_size} (batch_size {self.batch_size} x world_size "
                f"{self._world_size}) would yield no batch; lower batch_size or set "
                f"drop_last=False"
            )

    def plan(self) -> Plan:
        """This rank's plan for the rest of the current epoch."""
        self._resolve_topology()
        return Plan(
            num_records=self.samples_per_epoch,
            batch_size=self.batch_size,
            world_size=self._world_size,
            rank=self._rank,
            drop_last=self.drop_last,
            start=self._position,
        )

    def __len__(self) -> int:
        """Batches of a full epoch on this rank (as with DataLoader); see :attr:`batches_left`."""
        return self.batches_per_epoch

    @property
    def batches_left(self) -> int:
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
        if not len(plan):  # a state taken at the very end of an epoch: the next one runs
            self._next_epoch()
            plan = self.plan()
        requests = self._requests
        requests.plan = plan
        layout = self._window_layout()
        if layout is not None:
            order: Order = self._windows.order(
                self.source, layout, seed=self.seed, epoch=self._epoch
            )
        else:
            order = self._order_sampler.order(
                seed=self.seed, epoch=self._epoch, shuffle=self.shuffle
            )
        requests.order = order
        requests.feed = None
        if isinstance(order, WindowedOrder):
            requests.feed = WindowFeed(self.source, order, plan, self._windows.ids)
        requests.epoch = self._epoch
        return self._run(plan, generation)

    def _next_epoch(self) -> None:
        self._epoch += 1
        self._position = 0
        self._delivered = False

    def _batches(self) -> Iterator[Any]:
        if self._dataloader is None:
            # in this process: plain iterators, no generator frame of ours per batch
            batches = map(self._fetcher.__getitems__, self._requests)
            return map(pin_memory, batches) if self.pin_memory else batches
        return self._worker_batches()

    def _worker_batches(self) -> Iterator[Any]:
        try:
            yield from self._dataloader  # type: ignore[misc]
        except Exception:
            self._drop_workers()
            raise

    def _drop_workers(self) -> None:
        """Shut down a persistent worker pool after a failed pass (a worker may be dead,
        which would break every later pass); the next ``iter()`` starts new workers."""
        dataloader = self._dataloader
        iterator = getattr(dataloader, "_iterator", None)
        if dataloader is None or iterator is None:
            return
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()
        dataloader._iterator = None

    def _run(self, plan: Plan, generation: int) -> Iterator[Any]:
        last = len(plan) - 1
        # plan.consumed(k) without its calls per batch: the position after batch k < last
        start, step, full_pass = plan.start, plan.global_batch_size, self.full_pass
        for k, batch in enumerate(self._batches()):
            if generation != self._generation:
                self._check_current(generation)
            if not full_pass:
                # the epoch rolls over as its last batch is handed out, not when the caller
                # asks for one more: frameworks stop after len(loader) batches
                if k == last:
                    self._next_epoch()
                else:
                    self._position = start + (k + 1) * step
                    self._delivered = True
            yield batch
            if k == last:
                return  # nothing left: a newer iterator does not make this one an error
            if generation != self._generation:
                self._check_current(generation)
        self._check_current(generation)

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
        self._delivered = False

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
        sampler_id = self._order_sampler.identity()
        if sampler_id is not None:
            state[SAMPLER_KEY] = sampler_id
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (taken by :meth:`state_dict`, possibly on another topology).

        Raises:
            StateError: the state is malformed, from a newer version, or was taken on
                another dataset, seed or shuffle setting.
        """
        mine: dict[str, Any] = {
            "num_records": self.num_records,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }
        sampler_id = self._order_sampler.identity()
        if sampler_id is not None:
            mine[SAMPLER_KEY] = sampler_id
        epoch, position = check_state(state, mine=mine, samples_per_epoch=self.samples_per_epoch)
        self._load_windows(state.get(WINDOWS_KEY), epoch=epoch)
        self._generation += 1
        self._epoch = epoch
        self._position = position
        self._delivered = False
        if not self.full_pass and not len(self.plan()):
            self._next_epoch()  # taken at the very end of an epoch: the next one is current

    # -- issue #11: windowed reads of stores larger than their cache --------------------------
    # The logic lives in epochal._windows; the loader only asks it for the epoch's layout.

    def _window_layout(self) -> WindowLayout | None:
        """The current epoch's windowed-order layout, or None for the plain order."""
        return self._windows.layout(
            self.source,
            epoch=self._epoch,
            usable=self.shuffle and self._order_sampler.windowable,
            num_records=self.num_records,
            batch_size=self.batch_size,
            world_size=self.world_size,
        )

    def _windows_state(self) -> dict[str, Any] | None:
        self._window_layout()
        return self._windows.state()

    def _load_windows(self, value: Any, *, epoch: int) -> None:
        usable = self.shuffle and self._order_sampler.windowable
        self._windows.load(value, epoch=epoch, num_records=self.num_records, usable=usable)

    def describe(self) -> str:
        """A few lines saying how this loader reads: topology, batches, the order and, for a
        store larger than its cache, the windows it reads (blocks, sizes, mixing)."""
        if self._window_layout() is not None:
            order = self._windows.describe()
        else:
            order = self._order_sampler.describe(shuffle=self.shuffle)
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
