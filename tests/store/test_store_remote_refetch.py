"""One epoch of a windowed Loader downloads each byte of a remote store about once.

Records of ~3 KiB, written in label order, make granules of a few records that a 4 KiB
page rounds up by a third in the cache, and the cache holds a quarter of the store (the
benchmark's setting, scaled down). moto on 127.0.0.1 behind the counting proxy.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import epochal

N = 512
RECORD = 3072
BATCH = 16


def _epoch_bytes(
    s3: dict[str, Any],
    s3_proxy: Any,
    tmp_path: Any,
    shard_size: int,
    *,
    batch: int = BATCH,
    cache: float = 0.25,
    workers: int = 0,
) -> float:
    url = f"s3://epochal-test/{uuid.uuid4().hex[:10]}"
    manifest = epochal.write(
        ({"image": bytes([i % 256]) * RECORD, "label": i // 32} for i in range(N)),
        url,
        shard_size=shard_size,
        storage_options=s3["options"],
    )
    proxy = s3_proxy()
    store = epochal.open(
        url,
        storage_options=proxy.options,
        cache_dir=tmp_path / "cache",
        cache_size=int(manifest.num_bytes * cache),
    )
    loader = epochal.Loader(store, batch_size=batch, shuffle=True, seed=0, num_workers=workers)
    seen: list[int] = []
    for batch in loader:
        seen += [image[0] for image in batch["image"]]
    assert "windowed order" in loader.describe()
    aligned = manifest.shards[0].records % (manifest.shards[0].granule_records or 1) != 0
    assert ("blocks aligned to the source segments" in loader.describe()) == aligned
    assert sorted(seen) == sorted(i % 256 for i in range(N))
    traffic = proxy.traffic(f"epochal-test/{url.split('/')[-1]}/shards/")
    ratio = traffic.bytes / manifest.num_bytes
    print(f"shards of {manifest.shards[0].records} records: {traffic.requests} GETs, {ratio:.2f}x")
    return ratio


def test_granules_rounded_to_pages_still_fit_three_windows(s3, s3_proxy, tmp_path):
    # shards of 64 records: blocks and granules align, so only the cache's own accounting
    # (windows sized from store bytes, units stored in whole pages) can make it re-fetch
    # (batches of 32 and a cache of 45% of the store: planned from store bytes, two-batch
    # windows take 830 KB of pages in a 715 KB cache; from page-rounded bytes, one-batch
    # windows fit)
    ratio = _epoch_bytes(s3, s3_proxy, tmp_path, 64 * RECORD - 100, batch=32, cache=0.45)
    assert ratio <= 1.1


@pytest.mark.parametrize(("workers", "batch", "cache"), [(0, 16, 0.25), (2, 8, 0.4)])
def test_blocks_aligned_to_shards_download_each_granule_once(
    s3, s3_proxy, tmp_path, workers, batch, cache
):
    # shards of 83 records: blocks of 4 records as global ranges would straddle two granules
    # (4 records each, restarting at every shard) almost everywhere, so each granule would be
    # needed by two windows far apart and downloaded twice (1.5x; 3.0x before the cache's
    # page-rounded hint). Blocks aligned to the shards leave only the shards' 3-record
    # remainders to straddle granules. With workers, a window holds more batches than the
    # DataLoader keeps in flight (2 workers x prefetch 2): the loader retires a window two
    # windows after its last request, not after its last batch is delivered.
    ratio = _epoch_bytes(
        s3, s3_proxy, tmp_path, 250 << 10, batch=batch, cache=cache, workers=workers
    )
    assert ratio <= 1.1
