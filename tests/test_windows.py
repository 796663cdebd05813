"""Windowed order: an exact bijection that reads a store window by window, rank by rank."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import epochal
from _budget import examples
from epochal._windows import (
    ReadHint,
    WindowedOrder,
    WindowFeed,
    WindowLayout,
    choose_layout,
    segments_digest,
)
from epochal.order import make_order
from epochal.plan import Plan


def _layout(n: int, b: int, m: int, w: int, bsz: int) -> WindowLayout:
    return WindowLayout(
        num_records=n, block_records=b, window_records=m * bsz * w, world_size=w, batch_size=bsz
    )


layouts = st.builds(
    _layout,
    n=st.integers(1, 3000),
    b=st.integers(1, 60),
    m=st.integers(1, 8),
    w=st.integers(1, 4),
    bsz=st.integers(1, 9),
)
# at most ~13 windows, for the tests that walk window by window
few_windows = st.builds(
    lambda b, m, w, bsz, k, r: _layout(max(1, k * m * w * bsz + r), b, m, w, bsz),
    b=st.integers(1, 60),
    m=st.integers(1, 8),
    w=st.integers(1, 4),
    bsz=st.integers(1, 9),
    k=st.integers(0, 12),
    r=st.integers(0, 80),
)


def test_golden_windowed_order_is_part_of_the_contract():
    # Like the plain order's golden test: runs that read a store in windows depend on this
    # mapping (and a resumed run on it staying put). If it changes, revert the change.
    layout = _layout(23, 3, 2, 2, 2)
    assert WindowedOrder(layout, seed=0, epoch=0)[:].tolist() == GOLDEN


GOLDEN = [20, 18, 15, 16, 0, 19, 1, 2, 8, 7, 9, 11, 17, 6, 12, 10, 14, 13, 3, 4, 22, 21, 5]


def test_golden_stratified_windowed_order_is_part_of_the_contract():
    # the order of layouts with strata (every layout choose_layout makes since strata
    # exist); the one without strata above must stay as it was, for older states
    layout = dataclasses.replace(_layout(23, 3, 2, 2, 2), strata=3)
    assert WindowedOrder(layout, seed=0, epoch=0)[:].tolist() == GOLDEN_STRATIFIED


GOLDEN_STRATIFIED = [
    8,
    6,
    18,
    19,
    9,
    7,
    10,
    11,
    5,
    4,
    12,
    14,
    20,
    3,
    15,
    13,
    17,
    16,
    0,
    1,
    22,
    21,
    2,
]

stratified = st.builds(
    lambda layout, k: dataclasses.replace(layout, strata=k), layouts, st.integers(1, 70)
)


@settings(max_examples=examples(100), deadline=None)
@given(stratified, st.integers(0, 2**64 - 1), st.integers(0, 50))
def test_stratified_order_is_an_exact_bijection_for_every_layout(layout, seed, epoch):
    _assert_exact_bijection(WindowedOrder(layout, seed=seed, epoch=epoch), epoch)


@settings(max_examples=examples(60), deadline=None)
@given(st.integers(1, 400), st.integers(1, 50), st.integers(0, 2**64 - 1))
def test_every_k_consecutive_blocks_hold_one_block_of_every_stratum(blocks, strata, seed):
    # the property the mixing rests on: slots [r*K, (r+1)*K) (a rank's window slice) draw
    # one block from each stratum of consecutive blocks, the short last row from distinct ones
    layout = WindowLayout(
        num_records=blocks * 2, block_records=2, window_records=2, world_size=1, batch_size=1,
        strata=strata,
    )  # fmt: skip
    order = WindowedOrder(layout, seed=seed, epoch=3)
    block_of_slot = order._block_records(np.arange(0, 2 * blocks, 2)) // 2
    k = min(strata, blocks)
    rows, extra = divmod(blocks, k)
    size = np.where(np.arange(k) < extra, rows + 1, rows)
    stratum_of_block = np.repeat(np.arange(k), size)
    strata_seen = stratum_of_block[block_of_slot]
    for r in range(rows):
        assert sorted(strata_seen[r * k : (r + 1) * k]) == list(range(k))
    assert sorted(strata_seen[rows * k :]) == list(range(extra))


def test_layouts_made_now_are_stratified_and_old_states_keep_their_order():
    hint = ReadHint(record_bytes=100, cache_bytes=3_000_000, min_block_records=4)
    layout = choose_layout(hint, num_records=100_000, batch_size=16, world_size=2)
    assert layout.strata == layout.slice_blocks // 1 and layout.as_dict()["strata"] == layout.strata
    assert WindowLayout.from_dict(layout.as_dict()) == layout
    old = {k: v for k, v in layout.as_dict().items() if k != "strata"}  # a state from before
    assert WindowLayout.from_dict(old).strata is None
    assert np.array_equal(
        WindowedOrder(WindowLayout.from_dict(old), seed=5, epoch=1)[:],
        WindowedOrder(dataclasses.replace(layout, strata=None), seed=5, epoch=1)[:],
    )
    assert not np.array_equal(
        WindowedOrder(layout, seed=5, epoch=1)[:5000],
        WindowedOrder(WindowLayout.from_dict(old), seed=5, epoch=1)[:5000],
    )
    with pytest.raises(epochal.Error, match=r"strata must be None or an integer >= 1, got 0"):
        WindowLayout.from_dict({**layout.as_dict(), "strata": 0})
    assert "drawn from" in epochal._windows.describe_layout(layout)


@settings(max_examples=examples(100), deadline=None)
@given(layouts, st.integers(0, 2**64 - 1), st.integers(0, 50))
def test_exact_bijection_for_every_layout(layout, seed, epoch):
    """Every n, b, S, W, B (also n < S, n < b, n < G, n = 1): each record exactly once."""
    _assert_exact_bijection(WindowedOrder(layout, seed=seed, epoch=epoch), epoch)


def _assert_exact_bijection(order: WindowedOrder, epoch: int) -> None:
    """Each record exactly once, ``position`` inverts ``index``, and scalar and vectorised
    lookups agree in any order and shape."""
    n = order.n
    indices = order.index(np.arange(n))
    assert np.array_equal(np.sort(indices), np.arange(n))
    assert np.array_equal(order.position(indices), np.arange(n))
    p = np.random.default_rng(epoch).permutation(n)
    assert np.array_equal(order.index(p), indices[p])
    assert order[n - 1] == indices[-1] and order[0] == indices[0]


@pytest.mark.parametrize("k", [20, 33, 40])
def test_bijection_by_sampling_at_large_n(k):
    rng = np.random.default_rng(k)
    for n in (2**k - 1, 2**k + 1):
        layout = _layout(n, 4093, 1001, 3, 256)
        order = WindowedOrder(layout, seed=k, epoch=1)
        positions = np.unique(np.concatenate([rng.integers(0, n, 20_000), [0, 1, n - 2, n - 1]]))
        indices = order.index(positions)
        assert indices.min() >= 0 and indices.max() < n
        assert len(np.unique(indices)) == len(positions)
        assert np.array_equal(order.position(indices), positions)


def test_epochs_and_seeds_give_unrelated_orders():
    layout = _layout(5000, 8, 10, 2, 16)
    base = WindowedOrder(layout, seed=1, epoch=0)[:]
    assert not np.array_equal(base, WindowedOrder(layout, seed=1, epoch=1)[:])
    assert not np.array_equal(base, WindowedOrder(layout, seed=2, epoch=0)[:])
    assert np.array_equal(base, WindowedOrder(layout, seed=1, epoch=0)[:])


def _windows_and_ranks(layout: WindowLayout):
    """Per (window, layout rank): the positions that rank reads there in a matched plan."""
    g, bsz = layout.global_batch_size, layout.batch_size
    for window in range(layout.num_windows):
        start, ranked_stop, _ = layout.window_bounds(window)
        offsets = np.arange(start, ranked_stop) - start
        owner = (offsets % g) // bsz
        for rank in range(layout.world_size):
            yield window, rank, start + offsets[owner == rank]


@settings(max_examples=examples(60), deadline=None)
@given(
    st.one_of(
        few_windows,
        st.builds(lambda x, k: dataclasses.replace(x, strata=k), few_windows, st.integers(1, 40)),
    ),
    st.integers(0, 1000),
)
def test_each_rank_reads_only_its_own_blocks(layout, seed):
    """Rank r's positions in a window read its own block-order slice: the records of
    ``ranges(window, ranks=[r])`` and no other, touching at most 2 blocks that any other
    (window, rank) slice also reads."""
    order = WindowedOrder(layout, seed=seed, epoch=3)
    b = layout.block_records
    blocks = {}
    for window, rank, positions in _windows_and_ranks(layout):
        records = order.index(positions)
        ranges = order.ranges(window, ranks=[rank])
        assert np.all(ranges[:, 1] > ranges[:, 0])
        assert np.all((ranges[:, 1] - 1) // b == ranges[:, 0] // b), "a range stays in one block"
        scheduled = np.concatenate([np.arange(lo, hi) for lo, hi in ranges] or [[]])
        assert np.array_equal(np.sort(records), np.sort(scheduled).astype(np.int64))
        blocks[window, rank] = set((records // b).tolist())
    readers = Counter(block for mine in blocks.values() for block in mine)
    for key, mine in blocks.items():
        shared = [block for block in mine if readers[block] > 1]
        assert len(shared) <= 2, (key, shared)


def test_a_rank_reads_a_small_part_of_the_store_per_window():
    layout = _layout(100_000, 10, 50, 4, 32)  # a slice of 1600 records: 160 blocks
    order = WindowedOrder(layout, seed=0, epoch=0)
    positions = next(p for w, r, p in _windows_and_ranks(layout) if (w, r) == (1, 2))
    blocks = np.unique(order.index(positions) // 10)
    assert len(blocks) <= 1600 // 10 + 1
    # ... drawn from all over the store, not from one region
    assert blocks.max() - blocks.min() > 0.8 * 100_000 // 10


def test_final_partial_batch_is_every_rank_s_to_read():
    layout = _layout(1000, 7, 3, 2, 4)  # 1000 = 125 global batches of 8: no partial one
    assert layout.window_bounds(layout.num_windows - 1)[1:] == (1000, 1000)
    layout = _layout(1003, 7, 3, 2, 4)
    last = layout.num_windows - 1
    _start, ranked_stop, stop = layout.window_bounds(last)
    assert (ranked_stop, stop) == (1000, 1003)
    order = WindowedOrder(layout, seed=0, epoch=0)
    final = order.ranges(last, ranks=[], final=True)
    assert sorted(r for lo, hi in final for r in range(lo, hi)) == sorted(
        order.index(np.arange(1000, 1003)).tolist()
    )


def test_windows_are_cut_evenly():
    layout = _layout(10_000, 5, 7, 2, 10)  # 500 global batches, windows of at most 7
    sizes = [
        (hi - lo) // 20
        for lo, hi, _ in (layout.window_bounds(w) for w in range(layout.num_windows))
    ]
    assert layout.num_windows == 72 and sum(sizes) == 500 and set(sizes) == {6, 7}
    assert [layout.window_at(p) for p in (0, 139, 140, 9999)] == [0, 0, 1, 71]
    with pytest.raises(IndexError, match="window 72 is out of range"):
        layout.window_bounds(72)


# -- the layout's state form and choice ----------------------------------------------------


def test_layout_round_trips_and_refuses_bad_values():
    layout = _layout(1000, 4, 5, 2, 8)
    assert WindowLayout.from_dict(layout.as_dict()) == layout
    with pytest.raises(epochal.Error, match="multiple of the global batch 16"):
        WindowLayout(num_records=10, block_records=1, window_records=24, world_size=2, batch_size=8)
    with pytest.raises(epochal.Error, match="block_records must be an integer >= 1, got 0"):
        WindowLayout.from_dict({**layout.as_dict(), "block_records": 0})
    with pytest.raises(epochal.Error, match="needs exactly the keys"):
        WindowLayout.from_dict({"num_records": 10})


@settings(max_examples=examples(150), deadline=None)
@given(
    n=st.integers(1, 10**9),
    bsz=st.integers(1, 512),
    world=st.integers(1, 16),
    local=st.integers(1, 8),
    unit=st.integers(1, 300),
    record_bytes=st.floats(1, 1e6),
    cache_mib=st.integers(1, 10_000),
)
def test_chosen_layout_fits_the_cache_and_mixes(
    n, bsz, world, local, unit, record_bytes, cache_mib
):
    hint = ReadHint(record_bytes=record_bytes, cache_bytes=cache_mib << 20, min_block_records=unit)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOCAL_WORLD_SIZE", str(local))
        try:
            layout = choose_layout(hint, num_records=n, batch_size=bsz, world_size=world)
        except epochal.Error as error:
            least = int(str(error).split("cache_size >= ")[1].split(" ")[0])
            assert least > hint.cache_bytes
            # the minimum it names is enough
            ok = ReadHint(record_bytes=record_bytes, cache_bytes=least, min_block_records=unit)
            choose_layout(ok, num_records=n, batch_size=bsz, world_size=world)
            return
    per_rank = layout.window_records // world
    assert per_rank * record_bytes * 3 * local <= hint.cache_bytes
    assert per_rank >= unit or layout.num_windows == 1
    assert layout.window_records % (bsz * world) == 0
    assert layout.block_records % unit == 0
    if layout.block_records > unit:  # not held up by the fetch unit: the mixing rule holds
        assert layout.strata and layout.slice_blocks >= bsz  # stratified: K >= B
        bigger = layout.block_records + unit
        assert layout.slice_blocks * layout.block_records < bsz * bigger


def test_too_small_a_cache_says_the_minimum(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    hint = ReadHint(record_bytes=1000, cache_bytes=100_000, min_block_records=16)
    message = "cache_size=100000 bytes .* use cache_size >= 1536000 bytes \\(1.5 MiB\\)"
    with pytest.raises(epochal.Error, match=message):
        choose_layout(hint, num_records=10**6, batch_size=256, world_size=4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")
    with pytest.raises(epochal.Error, match="LOCAL_WORLD_SIZE must be an integer >= 1, got 'two'"):
        choose_layout(hint, num_records=10**6, batch_size=256, world_size=4)


def test_reserved_bytes_are_not_window_room(monkeypatch):
    """A remote store's heads stay cached all epoch: windows fit in what is left of the cache,
    and the minimum a too-small cache is told includes them."""
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    base = dict(record_bytes=1000, cache_bytes=3 * 256 * 1000 * 10, min_block_records=16)
    plain = choose_layout(ReadHint(**base), num_records=10**6, batch_size=256, world_size=1)
    reserved = 3 * 256 * 1000  # a batch per window less
    held = ReadHint(**base, reserved_bytes=reserved)
    layout = choose_layout(held, num_records=10**6, batch_size=256, world_size=1)
    assert (plain.window_records, layout.window_records) == (2560, 2304)
    assert 3 * layout.window_records * 1000 + reserved <= held.cache_bytes
    small = ReadHint(record_bytes=1000, cache_bytes=768_000, min_block_records=16, reserved_bytes=5)
    with pytest.raises(epochal.Error, match="use cache_size >= 768005 bytes"):
        choose_layout(small, num_records=10**6, batch_size=256, world_size=1)
    with pytest.raises(epochal.Error, match="reserved_bytes must be an integer >= 0, got -1"):
        ReadHint(**base, reserved_bytes=-1)


# -- mixing on a store written in label order ----------------------------------------------


def _mean_tv(order, plans, labels: np.ndarray, classes: int) -> float:
    """Mean total-variation distance of each batch's label histogram to the global one."""
    glob = np.bincount(labels, minlength=classes) / len(labels)
    distances = []
    for plan in plans:
        rows = order.index(plan.full_positions(0, plan.full_batches))
        counts = np.stack([np.bincount(labels[row], minlength=classes) for row in rows])
        distances.append(np.abs(counts / plan.batch_size - glob).sum(axis=1) / 2)
    return float(np.concatenate(distances).mean())


@pytest.mark.parametrize("world_size", [1, 2])
def test_batches_mix_like_a_global_shuffle_on_a_label_ordered_store(world_size):
    n, classes, bsz = 120_000, 10, 64
    labels = np.arange(n) * classes // n  # written in label order: single-label blocks
    hint = ReadHint(record_bytes=100, cache_bytes=n * 100 // 20, min_block_records=1)
    layout = choose_layout(hint, num_records=n, batch_size=bsz, world_size=world_size)
    assert layout.num_windows > 20 and layout.mixing_factor < 1.25
    plans = [
        Plan(num_records=n, batch_size=bsz, world_size=world_size, rank=r)
        for r in range(world_size)
    ]
    for seed in range(3):
        plain = _mean_tv(make_order(n, seed=seed), plans, labels, classes)
        windowed = _mean_tv(WindowedOrder(layout, seed=seed, epoch=0), plans, labels, classes)
        assert windowed <= 1.25 * plain, (seed, windowed / plain)
        # stratified blocks mix better than the unstratified draw of the same blocks
        unstratified = dataclasses.replace(layout, strata=None)
        assert windowed < _mean_tv(
            WindowedOrder(unstratified, seed=seed, epoch=0), plans, labels, classes
        )
    # the same windows made of a few big blocks mix like single shards: the test can fail
    coarse = WindowLayout(
        **{**layout.as_dict(), "block_records": 8 * layout.block_records, "strata": None}
    )
    windowed = _mean_tv(WindowedOrder(coarse, seed=0, epoch=0), plans, labels, classes)
    assert windowed > 1.5 * _mean_tv(make_order(n, seed=0), plans, labels, classes)


# -- what the source is told ------------------------------------------------------------------


class _Recorder:
    """The schedule/retire side of a WindowedSource, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def schedule(self, ranges: np.ndarray, *, window: int) -> None:
        assert ranges.dtype == np.int64 and ranges.ndim == 2 and ranges.shape[1] == 2
        self.calls.append(("schedule", window, ranges.copy()))

    def retire(self, *, window: int) -> None:
        self.calls.append(("retire", window))


def _drive(order: WindowedOrder, plan: Plan) -> tuple[_Recorder, list[tuple[int, np.ndarray]]]:
    """Run one rank's pass through a feed; return the calls and, per batch, the window id
    scheduled most recently for it plus the records it reads."""
    source = _Recorder()
    feed = WindowFeed(source, order, plan, itertools.count())
    reads = []
    for k in range(len(plan)):
        positions = plan.positions(k)
        feed.before(positions)
        reads.append((len(source.calls), order.index(positions)))
    return source, reads


def _records(ranges: np.ndarray) -> set[int]:
    return {r for lo, hi in ranges.tolist() for r in range(lo, hi)}


def _assert_reads_are_live(source: _Recorder, reads: list[tuple[int, np.ndarray]]) -> None:
    """Each batch reads only records scheduled, and not retired, before its request."""
    scheduled: dict[int, set[int]] = {}
    done = 0
    for k, (ncalls, records) in enumerate(reads):
        for call in source.calls[done:ncalls]:
            if call[0] == "schedule":
                scheduled[call[1]] = _records(call[2])
            else:
                for ident in [i for i in scheduled if i <= call[1]]:
                    del scheduled[ident]
        done = ncalls
        live = set().union(*scheduled.values())
        assert set(records.tolist()) <= live, f"batch {k} reads records not scheduled or retired"


@settings(max_examples=examples(60), deadline=None)
@given(few_windows, st.integers(0, 100), st.data())
def test_scheduled_ranges_are_what_the_batches_then_read(layout, seed, data):
    order = WindowedOrder(layout, seed=seed, epoch=0)
    rank = data.draw(st.integers(0, layout.world_size - 1))
    plan = Plan(
        num_records=layout.num_records,
        batch_size=layout.batch_size,
        world_size=layout.world_size,
        rank=rank,
    )
    source, reads = _drive(order, plan)
    _assert_reads_are_live(source, reads)
    # per window: exactly the records its batches read from the rank's slice, plus the
    # final partial batch (every rank's to read) in the last window
    by_window: dict[int, set[int]] = {}
    final_start = layout.window_bounds(layout.num_windows - 1)[1]
    final = set(order.index(np.arange(final_start, layout.num_records)).tolist())
    for k in range(len(plan)):
        positions = plan.positions(k)
        for p, r in zip(positions.tolist(), order.index(positions).tolist()):
            by_window.setdefault(layout.window_at(p), set()).add(r)
        if positions[-1] >= final_start:
            by_window[layout.num_windows - 1] |= final
    schedules = [call for call in source.calls if call[0] == "schedule"]
    idents = [call[1] for call in schedules]
    assert idents == list(range(len(by_window)))
    for call, window in zip(schedules, sorted(by_window)):
        assert _records(call[2]) == by_window[window], window
    # window id i retires i - 2, once, when it begins
    assert [call[1] for call in source.calls if call[0] == "retire"] == idents[:-2]


def test_a_resume_mid_window_fetches_its_first_batch_s_blocks_first():
    layout = _layout(20_000, 5, 40, 2, 16)  # rank slices of ~624 records: ~125 blocks
    order = WindowedOrder(layout, seed=3, epoch=1)
    start = layout.window_bounds(2)[0] + 17 * layout.global_batch_size
    plan = Plan(num_records=20_000, batch_size=16, world_size=2, rank=1, start=start)
    source, _ = _drive(order, plan)
    ranges = np.array(source.calls[0][2])
    first = order.index(plan.positions(0))
    blocks = np.unique(first // 5)
    assert set(first.tolist()) <= _records(ranges[: len(blocks)])
    lo, hi, _ = layout.window_bounds(2)
    assert len(ranges) >= (hi - lo) // 2 // 5  # ... then the rest of the rank's slice


@settings(max_examples=examples(60), deadline=None)
@given(few_windows, st.data())
def test_schedules_cover_the_reads_of_a_resume_on_another_topology(layout, data):
    """After a resume with another world size, batch size or position, what a rank reads
    is still scheduled before it reads it (the byte saving degrades, not the order)."""
    n = layout.num_records
    world = data.draw(st.integers(1, 5))
    plan = Plan(
        num_records=n,
        batch_size=data.draw(st.integers(1, 12)),
        world_size=world,
        rank=data.draw(st.integers(0, world - 1)),
        start=data.draw(st.integers(0, n)),
    )
    order = WindowedOrder(layout, seed=1, epoch=2)
    source, reads = _drive(order, plan)
    _assert_reads_are_live(source, reads)


# -- the Loader reads a windowed source in windows ------------------------------------------


class FakeStore:
    """A windowed source over an in-memory column that records what it is told.

    ``hint=None`` makes it a source that reads locally (the plain order applies).
    """

    def __init__(self, n: int, *, hint: ReadHint | None, labels: np.ndarray | None = None):
        self.y = np.arange(n, dtype=np.int64)
        self.labels = labels
        self.hint = hint
        self.calls: list[tuple] = []

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"y": self.y[i]}

    def get_columns(self, indices: np.ndarray) -> dict:
        return {"y": self.y[indices]}

    def read_hint(self) -> ReadHint | None:
        return self.hint

    def schedule(self, ranges: np.ndarray, *, window: int) -> None:
        self.calls.append(("schedule", window, ranges.tolist()))

    def retire(self, *, window: int) -> None:
        self.calls.append(("retire", window))


def _hint(n: int, fraction: float, unit: int = 1) -> ReadHint:
    return ReadHint(record_bytes=100, cache_bytes=int(n * 100 * fraction), min_block_records=unit)


def _epoch_indices(loader: epochal.Loader) -> list[list[int]]:
    return [batch["_index"].tolist() for batch in loader]


def test_without_a_hint_nothing_changes():
    plain = epochal.Loader(epochal.from_arrays(y=np.arange(500)), 16, seed=4, with_index=True)
    local = epochal.Loader(FakeStore(500, hint=None), 16, seed=4, with_index=True)
    assert _epoch_indices(local) == _epoch_indices(plain)
    assert local.state_dict()["windows"] is None and plain.state_dict()["windows"] is None
    assert "order: global shuffle" in local.describe()
    # a hint is ignored where a windowed order does not apply: no shuffle, or a sampler
    ordered = epochal.Loader(FakeStore(500, hint=_hint(500, 0.1)), 16, shuffle=False)
    assert ordered.state_dict()["windows"] is None and not ordered.source.calls
    assert "source order" in ordered.describe()


def test_loader_uses_the_windowed_order_says_so_and_keeps_it_in_its_state(caplog):
    n = 3000
    source = FakeStore(n, hint=_hint(n, 0.1, unit=2))
    loader = epochal.Loader(source, 10, seed=5, with_index=True)
    with caplog.at_level("INFO", logger="epochal"):
        state = loader.state_dict()
    layout = WindowLayout.from_dict(state["windows"])
    assert layout == choose_layout(source.hint, num_records=n, batch_size=10, world_size=1)
    assert [r.getMessage() for r in caplog.records] == [
        f"epochal: epoch 0 uses a {epochal._windows.describe_layout(layout, source.hint)}"
    ]
    assert "windowed order: blocks of" in loader.describe()
    assert f"{layout.num_windows} windows per epoch" in loader.describe()
    batches = _epoch_indices(loader)
    order = WindowedOrder(layout, seed=5, epoch=0)
    assert [i for batch in batches for i in batch] == order.index(np.arange(n)).tolist()
    assert sorted(i for batch in batches for i in batch) == list(range(n))
    schedules = [call for call in source.calls if call[0] == "schedule"]
    assert len(schedules) == layout.num_windows
    assert set().union(*(_records(np.array(c[2])) for c in schedules)) == set(range(n))


class _Counting(FakeStore):
    """Counts, at each schedule/retire call, how many batch requests had been made."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = 0

    def get_columns(self, indices: np.ndarray) -> dict:
        self.requests += 1
        return super().get_columns(indices)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_schedule_and_retire_come_from_the_main_process_ahead_of_the_batches(num_workers):
    n = 2000
    source = FakeStore(n, hint=_hint(n, 0.15))
    loader = epochal.Loader(source, 8, seed=1, with_index=True, num_workers=num_workers)
    layout = WindowLayout.from_dict(loader.state_dict()["windows"])
    order = WindowedOrder(layout, seed=1, epoch=0)
    seen = _epoch_indices(loader)
    # the calls reached the main process's source (the workers hold copies) ...
    schedules = [call for call in source.calls if call[0] == "schedule"]
    assert [c[1] for c in schedules] == list(range(layout.num_windows))
    # ... and each window's ranges are exactly the records its batches read
    for window, call in enumerate(schedules):
        start, _, stop = layout.window_bounds(window)
        assert _records(np.array(call[2])) == set(order.index(np.arange(start, stop)).tolist())
    assert [c[1] for c in source.calls if c[0] == "retire"] == list(range(layout.num_windows - 2))
    assert sorted(i for batch in seen for i in batch) == list(range(n))
    # the next epoch continues the window ids
    _epoch_indices(loader)
    ids = [c[1] for c in source.calls if c[0] == "schedule"]
    assert ids == list(range(2 * layout.num_windows))


def _ranks(source: FakeStore, world: int, batch_size: int) -> list[epochal.Loader]:
    return [
        epochal.Loader(source, batch_size, seed=9, rank=r, world_size=world, with_index=True)
        for r in range(world)
    ]


def _assert_own_blocks(layout: WindowLayout, reads: list[list[int]], calls: list[list]) -> None:
    """Each rank read only records it scheduled; they are disjoint and cover the epoch's
    full global batches; per window a rank shares at most 2 blocks with the others."""
    flat = [set(r) for r in reads]
    assert sum(len(r) for r in reads) == len(set().union(*flat))
    b = layout.block_records
    for rank, rank_calls in enumerate(calls):
        scheduled = set().union(
            *(_records(np.array(c[2])) for c in rank_calls if c[0] == "schedule")
        )
        assert flat[rank] <= scheduled
        for call in rank_calls:
            if call[0] != "schedule":
                continue
            mine = {lo // b for lo, _ in call[2]}
            others = {
                lo // b
                for other in range(len(calls))
                if other != rank
                for c in calls[other]
                if c[0] == "schedule"
                for lo, _ in c[2]
            }
            assert len(mine & others) <= 2


def test_two_ranks_read_disjoint_records_from_their_own_blocks():
    n, world = 4000, 2
    sources = [FakeStore(n, hint=_hint(n, 0.1)) for _ in range(world)]  # one cache per rank
    loaders = [_ranks(s, world, 10)[r] for r, s in enumerate(sources)]
    layout = WindowLayout.from_dict(loaders[0].state_dict()["windows"])
    reads = [[i for batch in _epoch_indices(loader) for i in batch] for loader in loaders]
    assert sorted(reads[0] + reads[1]) == list(range(n))  # 200 global batches of 20
    _assert_own_blocks(layout, reads, [s.calls for s in sources])


@settings(max_examples=examples(8), deadline=None)
@example(stop=2, world=3, batch_size=3)  # 1,460 left over 3 ranks of 3: the last batch repeats one
@given(
    stop=st.integers(0, 60),
    world=st.integers(1, 3),
    batch_size=st.integers(3, 17),
)
def test_resume_on_another_topology_is_exact_and_keeps_the_epoch_s_layout(stop, world, batch_size):
    """Stop after ``stop`` steps on 2 ranks; resume on ``world`` ranks of another batch size:
    the epoch is finished with its own layout, every record exactly once; the next epoch
    gets a layout for the new topology."""
    n = 1500
    first = _ranks(FakeStore(n, hint=_hint(n, 0.1)), 2, 10)
    passes = [iter(loader) for loader in first]
    done = []
    for _ in range(min(stop, len(first[0]))):
        for p in passes:
            done += next(p)["_index"].tolist()
    state = first[0].state_dict()
    assert state == first[1].state_dict() and state["windows"]["world_size"] == 2
    second = _ranks(FakeStore(n, hint=_hint(n, 0.1)), world, batch_size)
    for loader in second:
        loader.load_state_dict(state)
        assert loader.state_dict()["windows"] == state["windows"]
    # the rest of the epoch's plan, read before the pass (after it, plan() is the next epoch's)
    repeats = second[0].plan().total_repeats  # the new topology's last batch, if partial
    rest = [i for loader in second for i in (x for b in _epoch_indices(loader) for x in b)]
    assert len(done) + len(rest) == n + repeats
    assert set(done) | set(rest) == set(range(n)) and not set(done) & set(rest)
    # the rest of the epoch is exactly the epoch's own order from the resume point on
    order = WindowedOrder(WindowLayout.from_dict(state["windows"]), seed=9, epoch=0)
    assert set(rest) == set(order.index(np.arange(state["position"], n)).tolist())
    new = second[0].state_dict()["windows"]
    assert (new["world_size"], new["batch_size"]) == (world, batch_size)


def test_a_state_s_layout_is_checked_on_load():
    n = 1000
    loader = epochal.Loader(FakeStore(n, hint=_hint(n, 0.1)), 10, seed=2)
    state = loader.state_dict()
    with pytest.raises(epochal.StateError, match="windows layout covers 999 records"):
        loader.load_state_dict({**state, "windows": {**state["windows"], "num_records": 999}})
    with pytest.raises(epochal.StateError, match=r"invalid 'windows' layout.*window_records"):
        loader.load_state_dict({**state, "windows": {**state["windows"], "window_records": 7}})
    # a state taken before windowed orders existed is a plain-order state
    old = {k: v for k, v in state.items() if k != "windows"}
    loader.load_state_dict(old)
    assert loader.state_dict()["windows"] is None
    plain = epochal.Loader(epochal.from_arrays(y=np.arange(n)), 10, seed=2)
    assert [b["y"].tolist() for b in loader] == [b["y"].tolist() for b in plain]
    assert loader.state_dict()["windows"] is not None  # the next epoch reads in windows again


# -- two real processes (gloo) --------------------------------------------------------------


def _distributed_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import json
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        n = 3000
        source = FakeStore(n, hint=_hint(n, 0.1))  # this process's own cache
        loader = epochal.Loader(source, 12, seed=7, with_index=True)
        reads = [i for batch in _epoch_indices(loader) for i in batch]
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"reads": reads, "calls": source.calls, "state": loader.state_dict()}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_read_their_own_blocks(tmp_path, free_port: int):
    import json

    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    layout = choose_layout(_hint(3000, 0.1), num_records=3000, batch_size=12, world_size=2)
    assert ranks[0]["state"] == ranks[1]["state"]
    assert WindowLayout.from_dict(ranks[0]["state"]["windows"]) == layout
    reads = [r["reads"] for r in ranks]
    # 3000 = 125 global batches of 24: no partial batch, every record exactly once
    assert sorted(reads[0] + reads[1]) == list(range(3000))
    _assert_own_blocks(layout, reads, [r["calls"] for r in ranks])


def test_describe_says_when_a_layout_misses_the_mixing_goal():
    # the benchmark's small store: 4-record granules, one 256-record window per rank
    small = WindowLayout(
        num_records=4000, block_records=4, window_records=256, world_size=1, batch_size=256
    )
    large = WindowLayout(
        num_records=400_000, block_records=4, window_records=2560, world_size=1, batch_size=256
    )
    assert small.mixing_factor > 1.25 and large.mixing_factor < 1.25
    assert "above the 1.25x goal" in epochal._windows.describe_layout(small)
    assert "goal" not in epochal._windows.describe_layout(large)


# -- blocks aligned to a source's segments (a store's shards) -------------------------------

# shard-like segments (empty ones too), in at most ~12 windows
segmented = st.builds(
    lambda counts, b, m, w, bsz: (
        counts,
        _layout(sum(counts), b, max(m, -(-sum(counts) // (12 * w * bsz))), w, bsz),
    ),
    counts=st.lists(st.integers(0, 90), min_size=1, max_size=12).filter(lambda c: sum(c) > 0),
    b=st.sampled_from([1, 2, 4, 8, 16]),
    m=st.integers(1, 6),
    w=st.integers(1, 3),
    bsz=st.integers(1, 9),
)


def _segmented(counts: list[int], layout: WindowLayout, seed: int) -> WindowedOrder:
    starts = np.cumsum([0, *counts])
    aligned = WindowLayout(**{**layout.as_dict(), "segments": segments_digest(starts)})
    return WindowedOrder(aligned, seed=seed, epoch=1, segments=starts)


@settings(max_examples=examples(40), deadline=None)
@given(segmented, st.integers(0, 1000))
def test_blocks_aligned_to_segments_keep_the_order_exact(case, seed):
    """With segments the order is still a bijection, ``position`` its inverse, and each
    (window, rank)'s ranges are exactly what it reads, each inside one segment."""
    counts, layout = case
    order = _segmented(counts, layout, seed)
    n = layout.num_records
    indices = order[:]
    assert np.array_equal(np.sort(indices), np.arange(n))
    assert np.array_equal(order.position(indices), np.arange(n))
    starts = np.cumsum([0, *counts])
    for window, rank, positions in _windows_and_ranks(layout):
        ranges = order.ranges(window, ranks=[rank])
        assert np.all(ranges[:, 1] > ranges[:, 0])
        segment = np.searchsorted(starts, ranges[:, 0], side="right") - 1
        assert np.all(ranges[:, 1] <= starts[segment + 1]), "a range stays in one segment"
        scheduled = np.concatenate([np.arange(lo, hi) for lo, hi in ranges] or [[]])
        assert np.array_equal(np.sort(order.index(positions)), np.sort(scheduled))


def _units_read_far_apart(order: WindowedOrder, counts: list[int], unit: int) -> int:
    """Fetch units (``unit`` records from each segment start) of the segments' whole blocks
    that windows more than one apart read."""
    layout, b = order.layout, order.layout.block_records
    starts = np.cumsum([0, *counts])
    seen: dict[tuple[int, int], set[int]] = {}
    for window in range(layout.num_windows):
        start, _, stop = layout.window_bounds(window)
        records = order.index(np.arange(start, stop))
        segment = np.searchsorted(starts, records, side="right") - 1
        local = records - starts[segment]
        whole = local < np.asarray(counts)[segment] // b * b
        for key in set(zip(segment[whole].tolist(), (local[whole] // unit).tolist())):
            seen.setdefault(key, set()).add(window)
    return sum(max(ws) - min(ws) > 1 for ws in seen.values())


@settings(max_examples=examples(40), deadline=None)
@given(segmented, st.integers(0, 1000), st.sampled_from([1, 2, 4]))
def test_a_unit_of_a_whole_block_is_read_in_one_window_or_two_consecutive(case, seed, unit):
    """Fetch units (``unit`` records, restarting at every segment start; ``unit`` divides
    ``b``) of the segments' whole blocks are read by one window or two consecutive ones
    (both in the cache), never by windows far apart: each is downloaded once per epoch."""
    counts, layout = case
    if layout.block_records % unit:
        return
    assert _units_read_far_apart(_segmented(counts, layout, seed), counts, unit) == 0


def test_without_segments_units_of_misaligned_shards_are_read_far_apart():
    # the control: shards of 83 records, blocks of 4 as global ranges (the old order)
    counts = [83] * 6
    layout = _layout(sum(counts), 4, 4, 1, 8)
    assert _units_read_far_apart(WindowedOrder(layout, seed=1, epoch=1), counts, 4) > 30
    assert _units_read_far_apart(_segmented(counts, layout, 1), counts, 4) == 0


def test_segments_that_hold_whole_blocks_keep_the_unsegmented_order():
    starts = np.array([0, 8, 16, 23])
    assert epochal._windows._Segments.is_identity(starts, 4)
    assert epochal._windows._Segments.is_identity(np.array([0, 8, 8, 11, 11]), 4)
    assert not epochal._windows._Segments.is_identity(np.array([0, 7, 16, 23]), 4)
    layout = _layout(23, 4, 2, 2, 2)
    assert layout.as_dict() == WindowLayout.from_dict(layout.as_dict()).as_dict()
    assert "segments" not in layout.as_dict()


class _Sharded(FakeStore):
    """A windowed fake whose fetch units restart at shard starts, like a store's granules."""

    def __init__(self, counts: list[int], **kwargs):
        super().__init__(sum(counts), **kwargs)
        self.starts = np.cumsum([0, *counts])

    def segment_starts(self) -> np.ndarray:
        return self.starts


def test_loader_aligns_blocks_to_a_source_s_segments_and_keeps_them_in_its_state():
    counts = [43] * 8 + [17]
    n = sum(counts)
    source = _Sharded(counts, hint=_hint(n, 0.1, unit=4))
    loader = epochal.Loader(source, 8, seed=3, with_index=True)
    state = loader.state_dict()
    layout = WindowLayout.from_dict(state["windows"])
    assert layout.segments == segments_digest(source.starts)
    assert "blocks aligned to the source segments" in loader.describe()
    head = []
    for batch in loader:
        head += batch["_index"].tolist()
        if len(head) >= 160:
            break
    middle = loader.state_dict()
    rest = _epoch_indices(loader)
    order = _segmented(counts, WindowLayout(**{**layout.as_dict(), "segments": None}), 3)
    expected = WindowedOrder(layout, seed=3, epoch=0, segments=source.starts)
    assert head + [i for b in rest for i in b] == expected.index(np.arange(n)).tolist()
    assert order.layout.segments == layout.segments
    # an exact resume from the middle state, also in a fresh loader
    again = epochal.Loader(_Sharded(counts, hint=_hint(n, 0.1, unit=4)), 8, seed=3, with_index=True)
    again.load_state_dict(middle)
    assert _epoch_indices(again) == rest
    # a source whose segments differ is not the one the state was taken with
    other = epochal.Loader(_Sharded([44] * 8 + [9], hint=_hint(n, 0.1, unit=4)), 8, seed=3)
    other.load_state_dict(middle)
    with pytest.raises(epochal.StateError, match="segments with digest"):
        next(iter(other))
