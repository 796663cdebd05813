"""End to end: a shuffled Loader over an S3 store 4x larger than its cache.

moto on 127.0.0.1 behind a counting proxy (bytes counted at the server side), the cache on
a small tmpfs the test mounts (its statvfs use counts files deleted but still open or
mapped). The windowed order (``epochal._windows``) schedules each window's blocks; the
cache fetches them by byte range and evicts retired ones.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from disk_env import PeakSampler

import epochal

N = 256
RECORD_INTS = 1024  # 8 KiB records; one fixed-size column: one range request per block
BATCH = 4


def _write(s3: dict[str, Any]) -> tuple[str, Any]:
    url = f"s3://epochal-test/{uuid.uuid4().hex[:10]}"
    manifest = epochal.write(
        ({"v": np.full(RECORD_INTS, i, dtype=np.int64)} for i in range(N)),
        url,
        shard_size=128 << 10,
        storage_options=s3["options"],
    )
    return url, manifest


def _labels(batch: dict[str, Any]) -> list[int]:
    v = np.asarray(batch["v"])
    assert (v == v[:, :1]).all()  # every record whole
    return v[:, 0].tolist()


def _shard_bytes(proxy: Any, url: str) -> int:
    return int(proxy.traffic(f"epochal-test/{url.split('/')[-1]}/").bytes)


@pytest.mark.parametrize("workers", [0, 2])
def test_shuffled_epoch_through_a_cache_a_quarter_of_the_store(s3, s3_proxy, tmpfs, workers):
    url, manifest = _write(s3)
    bound = manifest.num_bytes // 4
    mount = tmpfs(2 * bound)
    proxy = s3_proxy()
    store = epochal.open(
        url, storage_options=proxy.options, cache_dir=mount / "cache", cache_size=bound
    )
    loader = epochal.Loader(store, batch_size=BATCH, shuffle=True, seed=0, num_workers=workers)
    seen: list[int] = []
    with PeakSampler(mount, interval=0.001) as peak:
        for batch in loader:
            seen += _labels(batch)
    assert "windowed order" in loader.describe()
    assert sorted(seen) == list(range(N))
    assert seen != sorted(seen)
    ratio = _shard_bytes(proxy, url) / manifest.num_bytes
    unit = max(s.bytes * s.granule_records // s.records for s in manifest.shards)
    print(
        f"workers={workers}: bytes/store {ratio:.3f}, disk peak {peak.peak_above_baseline} of bound {bound}"
    )
    assert ratio <= 1.1
    assert peak.peak_above_baseline <= bound + unit + 4096


def test_two_ranks_with_their_own_caches_download_one_store_together(s3, s3_proxy, tmp_path):
    url, manifest = _write(s3)
    bound = manifest.num_bytes // 4
    proxy = s3_proxy()
    seen: list[int] = []
    for rank in (0, 1):  # as on two nodes: separate caches
        store = epochal.open(
            url, storage_options=proxy.options, cache_dir=tmp_path / f"node{rank}", cache_size=bound
        )
        loader = epochal.Loader(
            store, batch_size=BATCH, shuffle=True, seed=1, rank=rank, world_size=2
        )
        for batch in loader:
            seen += _labels(batch)
    assert sorted(seen) == list(range(N))
    ratio = _shard_bytes(proxy, url) / manifest.num_bytes
    print(f"W=2: bytes/store {ratio:.3f}")
    assert ratio <= 1.1


def test_resume_with_another_world_size_on_a_cold_cache(s3, s3_proxy, tmp_path):
    url, manifest = _write(s3)
    bound = manifest.num_bytes // 4
    proxy = s3_proxy()

    def loader(rank: int, world_size: int, cache: str) -> Any:
        store = epochal.open(
            url, storage_options=proxy.options, cache_dir=tmp_path / cache, cache_size=bound
        )
        return epochal.Loader(
            store, batch_size=BATCH, shuffle=True, seed=2, rank=rank, world_size=world_size
        )

    seen: list[int] = []
    ranks = [loader(rank, 2, f"node{rank}") for rank in (0, 1)]
    steps = 7
    for rank_loader in ranks:
        it = iter(rank_loader)
        for _ in range(steps):
            seen += _labels(next(it))
    state = ranks[0].state_dict()
    assert state["position"] == steps * BATCH * 2
    for rank_loader in ranks:  # their prefetch must not run on into what is counted next
        rank_loader.source._cache.close()
    # a cold cache, same topology: the first batch waits for its window, and the prefetch
    # takes the next one, not the store
    proxy.reset()
    cold = loader(0, 2, "cold0")
    cold.load_state_dict(state)
    next(iter(cold))
    cache = cold.source._cache
    assert cache is not None and cache._local().pool is not None
    cache._local().pool.shutdown(wait=True)  # let the prefetch of the scheduled windows end
    first = _shard_bytes(proxy, url)
    per_rank = state["windows"]["window_records"] // 2 * manifest.num_bytes / N
    print(
        f"cold resume: {first} bytes fetched for the first batch and the prefetch (window slice {per_rank:.0f})"
    )
    assert first <= 2.2 * per_rank + len(manifest.shards) * 4096
    assert first < manifest.num_bytes / 4
    cache.close()
    # another world size, on a cold cache too: the rest of the epoch, exactly
    resumed = loader(0, 1, "cold")
    resumed.load_state_dict(state)
    for batch in resumed:
        seen += _labels(batch)
    assert sorted(seen) == list(range(N))  # neither repeats nor skips a record
