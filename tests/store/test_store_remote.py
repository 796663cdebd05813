"""The remote cache against a real S3 server (moto on 127.0.0.1, behind a counting proxy).

What the cache itself promises (``store/_remote.py``): granules fetched by byte range and
verified, a real disk bound (nothing evicted stays mapped or open), eviction only of its
own files, manifest fields checked before they reach a path, an up-front error for a cache
too small, one download per unit across processes, prefetch with requests in flight
together, schedules that protect what the next batches need. The Loader-level end-to-end
tests are in ``test_store_remote_loader.py``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from disk_env import PeakSampler, used_bytes

import epochal
from epochal.store import CorruptStoreError
from epochal.store._format import Shard, fingerprint_of
from epochal.store._remote import CacheTooSmallError, ShardCache

RECORD_INTS = 128  # 1 KiB records: one fixed-size column, so one range request per run


def _record(i: int) -> dict[str, Any]:
    return {"v": np.full(RECORD_INTS, i, dtype=np.int64)}


def _write(s3: dict[str, Any], n: int, *, shard_size: int = 64 << 10) -> tuple[str, Any]:
    name = uuid.uuid4().hex[:10]
    url = f"s3://epochal-test/{name}"
    manifest = epochal.write(
        (_record(i) for i in range(n)), url, shard_size=shard_size, storage_options=s3["options"]
    )
    return url, manifest


def _check(cols: dict[str, Any], indices: np.ndarray) -> None:
    v = np.asarray(cols["v"])
    assert v.shape == (len(indices), RECORD_INTS)
    np.testing.assert_array_equal(v[:, 0], indices)
    np.testing.assert_array_equal(v[:, -1], indices)


def _store_dir(root: Path, url: str) -> Path:
    import xxhash

    return root / xxhash.xxh3_64_hexdigest(url.encode())


def _granule_bytes(manifest: Any) -> int:
    return max(s.bytes * s.granule_records // s.records for s in manifest.shards)


def test_range_reads_fetch_only_the_granules_a_batch_needs(s3, s3_proxy, tmp_path):
    url, manifest = _write(s3, 2048)  # 2 MiB in 32 shards of 64 KiB, 16 granules each
    proxy = s3_proxy()
    store = epochal.open(url, storage_options=proxy.options, cache_dir=tmp_path)
    picks = np.array([3, 700, 701, 1500, 2047])
    _check(store.get_columns(picks), picks)
    shards = proxy.traffic(f"epochal-test/{url.split('/')[-1]}/shards/")
    # 4 granules (700 and 701 share one), nothing else of the shards
    g = manifest.shards[0].granule_records
    assert 1 < g < manifest.shards[0].records
    starts = np.cumsum([0] + [s.records for s in manifest.shards])
    granules = set()
    for i in picks.tolist():
        k = int(np.searchsorted(starts, i, side="right")) - 1
        granules.add((k, (i - starts[k]) // g))
    assert len(granules) == 4
    records = sum(min(g, manifest.shards[k].records - u * g) for k, u in granules)
    assert shards.bytes == records * RECORD_INTS * 8
    assert shards.bytes < manifest.num_bytes / 50
    # a second read of the same records is served by the cache alone
    proxy.reset()
    _check(store.get_columns(picks[::-1]), picks[::-1])
    assert proxy.traffic("").requests == 0


def test_eviction_touches_only_the_caches_own_files(s3, tmp_path):
    # the cache dir is a folder that holds a local store (the case that lost its shards)
    local = tmp_path / "local-store"
    epochal.write((_record(i) for i in range(300)), local, shard_size=32 << 10)
    url, manifest = _write(s3, 1024, shard_size=256 << 10)
    own = _store_dir(local, url)
    own.mkdir(parents=True)
    foreign = {
        own / "notes.arrow": b"not the cache's",
        own / "b-0123456789abcdef-0.unit.bak": b"a name that only looks like a unit",
        own / "c-0123456789abcdef-0.unit": b"another prefix",
        local / "other.unit": b"outside the store's folder",
    }
    for path, data in foreign.items():
        path.write_bytes(data)
    before = {p: p.read_bytes() for p in local.rglob("*") if p.is_file()}
    bound = manifest.num_bytes // 4
    store = epochal.open(url, storage_options=s3["options"], cache_dir=local, cache_size=bound)
    order = np.random.default_rng(0).permutation(len(store))[:192]
    for batch in np.array_split(order, 12):
        _check(store.get_columns(batch), batch)
    assert store._cache is not None and store._cache.fetched_bytes > bound  # it evicted
    units = [p for p in own.iterdir() if p.name.startswith("b-") and p.suffix == ".unit"]
    assert 0 < sum(p.stat().st_blocks * 512 for p in units) <= bound
    for path, data in before.items():
        assert path.read_bytes() == data, path
    epochal.open(local, verify=True)


def _hostile(s3: dict[str, Any], field: str, value: Any) -> str:
    """A store whose manifest has ``field`` of its first shard set to ``value``, otherwise
    consistent (record count and fingerprint recomputed), as an attacker would write it."""
    url, manifest = _write(s3, 64, shard_size=16 << 10)
    shards = list(manifest.shards)
    entry = shards[0].to_json()
    entry[field] = value
    shards[0] = Shard(**entry)
    body = json.loads(manifest.to_bytes())
    body["shards"] = [
        dict(s.to_json(), **({field: value} if i == 0 else {})) for i, s in enumerate(shards)
    ]
    body["fingerprint"] = fingerprint_of(manifest.columns, tuple(shards))
    s3["fs"].pipe_file(f"{url}/manifest.json", json.dumps(body).encode())
    return url


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "../../escape.arrow"),
        ("name", ".."),
        ("name", "a/../../b.arrow"),
        ("xxh3", "../../../../tmp/escape"),
        ("xxh3", "0123456789ABCDEF"),
        ("xxh3", "/etc/passwd"),
        ("granules_xxh3", "../x"),
        ("granule_records", 0),
        ("granule_records", 10**9),
    ],
)
def test_hostile_manifest_fields_are_refused_before_any_path(s3, tmp_path, field, value):
    url = _hostile(s3, field, value)
    cache = tmp_path / "deep" / "cache"
    cache.parent.mkdir()
    with pytest.raises(CorruptStoreError, match="manifest"):
        store = epochal.open(url, storage_options=s3["options"], cache_dir=cache)
        store.get_columns(np.arange(len(store)))
    assert not cache.exists()
    assert [p.name for p in tmp_path.rglob("*")] == ["deep"]


def test_hostile_granule_index_is_refused(s3, tmp_path):
    url, manifest = _write(s3, 64, shard_size=16 << 10)
    shard = manifest.shards[0]
    index = json.loads(s3["fs"].cat_file(f"{url}/blocks/{shard.name}.json"))
    index["columns"][0]["rows"][0] = shard.bytes  # the rows buffer "starts" past the end
    raw = json.dumps(index).encode()
    s3["fs"].pipe_file(f"{url}/blocks/{shard.name}.json", raw)
    import xxhash

    body = json.loads(manifest.to_bytes())
    body["shards"][0]["granules_xxh3"] = xxhash.xxh3_64_hexdigest(raw)
    s3["fs"].pipe_file(f"{url}/manifest.json", json.dumps(body).encode())
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    with pytest.raises(CorruptStoreError, match=f"shards/{shard.name} .*granule index is damaged"):
        store[0]
    _check(store.get_columns(np.array([63])), np.array([63]))  # other shards still read


def test_corrupt_granule_names_the_shard_and_is_not_cached(s3, tmp_path):
    url, manifest = _write(s3, 256, shard_size=32 << 10)
    shard = manifest.shards[1]
    data = bytearray(s3["fs"].cat_file(f"{url}/shards/{shard.name}"))
    index = json.loads(s3["fs"].cat_file(f"{url}/blocks/{shard.name}.json"))
    data[index["columns"][0]["rows"][0] + 3 * RECORD_INTS * 8] ^= 0x10  # in record 3's bytes
    s3["fs"].pipe_file(f"{url}/shards/{shard.name}", bytes(data))
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    first = manifest.shards[0].records
    with pytest.raises(
        CorruptStoreError,
        match=rf"shard shards/{shard.name} of {url} is corrupt: granule \d+ \(records [0-3]\.\.[3-9]\)",
    ):
        store[first + 3]
    assert not list(tmp_path.rglob(f"b-{shard.xxh3}-0.unit"))
    far = np.array([first + shard.records - 1, 0])  # other granules and shards are fine
    _check(store.get_columns(far), far)


def test_cache_too_small_is_an_error_that_says_the_minimum(s3, tmp_path):
    url, manifest = _write(s3, 128, shard_size=32 << 10)
    with pytest.raises(CacheTooSmallError, match=r"use at least \d+ bytes"):
        epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path, cache_size=100)
    bound = manifest.num_bytes // 8
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path, cache_size=bound)
    with pytest.raises(CacheTooSmallError, match=r"window 0 .* use at least \d+ bytes"):
        store.schedule(np.array([[0, 128]]), window=0)
    # a batch bigger than the cache is still read: unit by unit, evicting as it goes
    _check(store.get_columns(np.arange(128)), np.arange(128))
    assert sum(p.stat().st_blocks * 512 for p in tmp_path.rglob("*.unit")) <= bound


def test_store_without_granule_index_reads_whole_shards(s3, tmp_path):
    url, manifest = _write(s3, 256, shard_size=32 << 10)
    body = json.loads(manifest.to_bytes())
    for entry in body["shards"]:
        del entry["granule_records"], entry["granules_xxh3"]
    s3["fs"].pipe_file(f"{url}/manifest.json", json.dumps(body).encode())
    s3["fs"].rm(f"{url}/blocks", recursive=True)
    bound = 3 * max(s.bytes for s in manifest.shards)
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path, cache_size=bound)
    order = np.random.default_rng(2).permutation(256)
    for batch in np.array_split(order, 8):
        _check(store.get_columns(batch), batch)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files and all(p.name.startswith("s-") and p.suffix == ".arrow" for p in files)
    assert sum(p.stat().st_blocks * 512 for p in files) <= bound
    assert _held_deleted(tmp_path) == []


def _held_deleted(root: Path) -> list[str]:
    """Files under ``root`` deleted but still open or mapped by this process."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if target.startswith(str(root)) and target.endswith("(deleted)"):
            held.append(target)
    with open("/proc/self/maps") as f:
        held += [line for line in f if str(root) in line and "(deleted)" in line]
    return held


def _read_in_child(
    url: str, options: dict[str, Any], cache: str, bound: int, seed: int, queue: Any
) -> None:
    store = epochal.open(url, storage_options=options, cache_dir=cache, cache_size=bound)
    order = np.random.default_rng(seed).permutation(len(store))[:64]
    ok = True
    for batch in np.array_split(order, 4):
        ok &= bool((np.asarray(store.get_columns(batch)["v"])[:, 0] == batch).all())
    queue.put((ok, _held_deleted(Path(cache))))


def test_disk_bound_is_real_across_processes(s3, tmpfs, tmp_path):
    """Two processes read random records of a store 4x the bound (their granules add up to
    4x the bound) through one cache on a small tmpfs: its used blocks (which count files
    deleted but still open or mapped) never exceed the bound plus one granule, and no
    process holds an evicted file."""
    url, manifest = _write(s3, 2048, shard_size=256 << 10)  # 2 MiB, granules of 16 KiB
    bound = manifest.num_bytes // 4
    mount = tmpfs(bound * 2)
    ctx = mp.get_context("fork")  # as DataLoader workers are started
    queue = ctx.Queue()
    with PeakSampler(mount, interval=0.001) as peak:
        children = [
            ctx.Process(
                target=_read_in_child,
                args=(url, s3["options"], str(mount / "cache"), bound, seed, queue),
            )
            for seed in (1, 2)
        ]
        for child in children:
            child.start()
        results = [queue.get(timeout=240) for _ in children]
        for child in children:
            child.join(timeout=60)
            assert child.exitcode == 0
    assert results == [(True, []), (True, [])]
    assert peak.samples > 10
    assert peak.peak_above_baseline <= bound + _granule_bytes(manifest) + 4096
    assert used_bytes(mount) - peak.baseline <= bound


def _count_stores(log: str) -> Any:
    original = ShardCache._store

    def counting(self: ShardCache, path: str, raw: bytes, **kwargs: Any) -> None:
        original(self, path, raw, **kwargs)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.path.basename(path)}\n".encode())
        os.close(fd)

    return counting


def _read_all(url: str, options: dict[str, Any], cache: str, seed: int, queue: Any) -> None:
    store = epochal.open(url, storage_options=options, cache_dir=cache)
    order = np.random.default_rng(seed).permutation(len(store))
    ok = True
    for batch in np.array_split(order, 8):
        ok &= bool((np.asarray(store.get_columns(batch)["v"])[:, 0] == batch).all())
    queue.put(ok)


def test_processes_share_one_cache_and_download_each_byte_once(s3, s3_proxy, tmp_path):
    url, manifest = _write(s3, 1024, shard_size=256 << 10)
    proxy = s3_proxy()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    children = [
        ctx.Process(target=_read_all, args=(url, proxy.options, str(tmp_path), seed, queue))
        for seed in range(3)
    ]
    for child in children:
        child.start()
    assert [queue.get(timeout=240) for _ in children] == [True] * 3
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    shards = proxy.traffic(f"epochal-test/{url.split('/')[-1]}/shards/")
    # the one column's rows are every byte the records hold: fetched exactly once in all
    assert shards.bytes == 1024 * RECORD_INTS * 8
    index = proxy.traffic(f"epochal-test/{url.split('/')[-1]}/blocks/")
    assert index.requests == len(manifest.shards)


def test_schedule_prefetches_with_requests_in_flight_together(s3, tmp_path, monkeypatch):
    url, manifest = _write(s3, 1024)
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    # four runs in four shards: fetched by four threads at once (a barrier they must all reach)
    barrier = threading.Barrier(4, timeout=30)
    original = ShardCache._get_ranges
    met = []

    def meeting(self: ShardCache, k: int, ranges: list[tuple[int, int]], **kw: Any) -> list[bytes]:
        if ranges and ranges[0][1] - ranges[0][0] > RECORD_INTS * 8:  # the data runs, not heads
            met.append(barrier.wait())
        return original(self, k, ranges, **kw)

    monkeypatch.setattr(ShardCache, "_get_ranges", meeting)
    starts = np.cumsum([0] + [s.records for s in manifest.shards])
    g = manifest.shards[0].granule_records
    # runs whose locks differ (runs that share a lock file fetch one after the other)
    shards: list[int] = []
    taken: set[int] = set()
    for k in range(len(manifest.shards)):
        stripes = {ShardCache.lock_stripe(k, u) for u in range(8 // g, 24 // g)}
        if not stripes & taken and len(shards) < 4:
            shards.append(k)
            taken |= stripes
    ranges = np.array([[starts[k] + 8, starts[k] + 24] for k in shards])
    store.schedule(ranges, window=0)
    store.schedule(np.zeros((0, 2), dtype=np.int64), window=1)
    cache = store._cache
    assert cache is not None
    cache._local().pool.shutdown(wait=True)
    assert sorted(met) == [0, 1, 2, 3]
    for k in shards:
        for u in range(8 // g, -(-24 // g)):
            assert os.path.exists(cache.unit_path(k, u))
    cache.close()


def test_scheduled_units_survive_eviction_until_retired(s3, tmp_path):
    url, manifest = _write(s3, 1024, shard_size=256 << 10)
    g = manifest.shards[0].granule_records
    bound = manifest.num_bytes // 4
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path, cache_size=bound)
    cache = store._cache
    assert cache is not None
    window0 = np.array([[0, 64]])  # a sixteenth of the store
    store.schedule(window0, window=0)
    cache._local().pool.shutdown(wait=True)
    cache._local().pool = None
    pinned = [cache.unit_path(0, u) for u in range(64 // g)]
    assert all(os.path.exists(p) for p in pinned)
    rest = np.arange(64, 1024)
    for batch in np.array_split(rest, 16):  # 15/16 of the store through a quarter of it
        _check(store.get_columns(batch), batch)
        assert all(os.path.exists(p) for p in pinned)
    store.retire(window=0)
    for batch in np.array_split(rest, 16):
        store.get_columns(batch)
    assert not all(os.path.exists(p) for p in pinned)  # no longer protected: evicted first
    cache.close()


def _labelled(s3: dict[str, Any], n: int) -> tuple[str, Any]:
    url = f"s3://epochal-test/{uuid.uuid4().hex[:10]}"
    manifest = epochal.write(
        ({"image": bytes([i % 251]) * 3000, "label": i % 10, "index": i} for i in range(n)),
        url,
        shard_size=n * 3100,  # one shard
        storage_options=s3["options"],
    )
    return url, manifest


def test_small_columns_come_with_the_head_so_a_granule_run_is_one_request(s3, s3_proxy, tmp_path):
    # labels and ids are a small part of each record: fetched once per shard with its head,
    # so every run of granules is one range request (its images) instead of two
    url, manifest = _labelled(s3, 256)
    g = manifest.shards[0].granule_records
    units = manifest.shards[0].records // g
    assert units >= 8
    proxy = s3_proxy()
    store = epochal.open(url, storage_options=proxy.options, cache_dir=tmp_path)
    picks = np.arange(0, 256, 2 * g)  # every other granule: runs that do not touch
    cols = store.get_columns(picks)
    assert [image[0] for image in cols["image"]] == [i % 251 for i in picks.tolist()]
    assert np.asarray(cols["index"]).tolist() == picks.tolist()
    assert np.asarray(cols["label"]).tolist() == (picks % 10).tolist()
    shards = proxy.traffic(f"epochal-test/{url.split('/')[-1]}/shards/")
    # the head: the images' offsets, then labels and ids (adjacent); then one per run
    assert shards.requests == 2 + len(picks)


def test_a_damaged_cached_head_is_fetched_again_not_reported_as_a_corrupt_store(s3, tmp_path):
    url, manifest = _labelled(s3, 256)
    g = manifest.shards[0].granule_records
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    store.get_columns(np.array([0]))
    head = next(_store_dir(tmp_path, url).glob("h-*.head"))
    raw = bytearray(head.read_bytes())
    records = manifest.shards[0].records
    raw[len(raw) - (records - 3 * g) * 8] ^= 0xFF  # record 3g's id: only granule digests check it
    head.write_bytes(bytes(raw))
    fresh = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    picks = np.array([3 * g, 5 * g + 1])
    assert np.asarray(fresh.get_columns(picks)["index"]).tolist() == picks.tolist()


def test_a_window_s_runs_with_small_gaps_are_one_range_get(s3, s3_proxy, tmp_path):
    # a window reads runs of 10 granules of one shard with one unwanted granule between
    # them: prefetched as ONE range GET (the gaps' bytes fetched and dropped, <= 1.1x), where
    # the same records read as batch misses (never coalesced) cost one GET per run
    url, manifest = _write(s3, 1024, shard_size=256 << 10)
    g = manifest.shards[0].granule_records
    units = manifest.shards[0].records // g
    runs = [(u, u + 10) for u in range(0, units - 9, 11)]
    assert len(runs) >= 3
    ranges = np.array([[a * g, b * g] for a, b in runs], dtype=np.int64)
    picks = np.concatenate([np.arange(a, b) for a, b in ranges.tolist()])
    prefix = f"epochal-test/{url.split('/')[-1]}/shards/"
    proxy = s3_proxy()

    demand = epochal.open(url, storage_options=proxy.options, cache_dir=tmp_path / "a")
    _check(demand.get_columns(picks), picks)
    separate = proxy.traffic(prefix)
    proxy.reset()

    store = epochal.open(url, storage_options=proxy.options, cache_dir=tmp_path / "b")
    store.schedule(ranges, window=0)
    cache = store._cache
    assert cache is not None
    cache._local().pool.shutdown(wait=True)
    cache._local().pool = None
    coalesced = proxy.traffic(prefix)
    assert separate.requests - coalesced.requests == len(runs) - 1  # same heads, 1 data GET
    wanted = len(picks) * RECORD_INTS * 8
    assert wanted < coalesced.bytes - (separate.bytes - wanted) <= 1.1 * wanted
    # the wanted granules are cached, the gaps' are not, and reads need no more requests
    assert all(os.path.exists(cache.unit_path(0, u)) for a, b in runs for u in range(a, b))
    assert not any(os.path.exists(cache.unit_path(0, b)) for _, b in runs[:-1])
    proxy.reset()
    _check(store.get_columns(picks), picks)
    assert proxy.traffic(prefix).requests == 0
    cache.close()


def test_an_eviction_frees_a_slack_of_unpinned_units_so_the_next_stores_need_none(
    s3, tmp_path, monkeypatch
):
    """Each eviction pass (a listing of the folder under the lock every store takes) frees
    1/EVICT_SLACK of the bound more than it must: the stores after it fit without one."""
    from epochal.store._cache_files import EVICT_SLACK

    n = 4096
    url, manifest = _write(s3, n, shard_size=256 << 10)
    bound = manifest.num_bytes // 4
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path, cache_size=bound)
    cache = store._cache
    assert cache is not None
    passes, stored = [], []
    load_pins, store_unit = ShardCache._load_pins, ShardCache._store
    monkeypatch.setattr(ShardCache, "_load_pins", lambda self: passes.append(1) or load_pins(self))

    def counted(self: ShardCache, path: str, raw: bytes, *, window: int | None) -> None:
        stored.append(-(-len(raw) // 4096) * 4096)
        store_unit(self, path, raw, window=window)

    monkeypatch.setattr(ShardCache, "_store", counted)
    for batch in np.array_split(np.arange(n), 64):  # the store 4x through its bound
        _check(store.get_columns(batch), batch)
    folder = _store_dir(tmp_path, url)
    used = sum(p.stat().st_blocks * 512 for p in folder.iterdir() if p.is_file())
    assert used <= bound
    per_pass = (bound // EVICT_SLACK) // max(stored)  # stores a pass makes room for, at least
    assert per_pass >= 3  # the geometry exercises the slack
    past_bound = sum(1 for i in range(len(stored)) if sum(stored[: i + 1]) > bound)
    assert passes and len(passes) <= past_bound / per_pass + 2
    cache.close()


def test_a_store_lists_the_folder_only_when_another_process_stored_since(s3, tmp_path, monkeypatch):
    """The evict lock file counts stores: a process that finds its own count there takes room
    its last pass left, without listing the folder; another process's store (the count
    moved) makes it count the folder again, so the bound holds across processes."""
    from epochal.store import _cache_files

    url, manifest = _write(s3, 1024, shard_size=256 << 10)
    bound = manifest.num_bytes // 4
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path, cache_size=bound)
    cache = store._cache
    assert cache is not None
    listings = []
    scandir = os.scandir
    monkeypatch.setattr(_cache_files.os, "scandir", lambda p: listings.append(p) or scandir(p))
    g = manifest.shards[0].granule_records

    def read_unit(u: int) -> None:
        batch = np.arange(u * g, (u + 1) * g)
        _check(store.get_columns(batch), batch)

    read_unit(0)  # the first store (and the head's) list the folder
    first = len(listings)
    assert first >= 1
    for u in range(1, 4):
        read_unit(u)
    assert len(listings) == first  # its own count was there: no listing
    lock = _store_dir(tmp_path, url) / ".evict.lock"
    assert lock.stat().st_blocks == 0  # the count is the file's size: no room taken
    os.truncate(lock, lock.stat().st_size + 1)  # as another process's store does
    read_unit(4)
    assert len(listings) == first + 1
    read_unit(5)
    assert len(listings) == first + 1
    cache.close()
