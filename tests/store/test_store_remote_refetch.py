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
    loader = epochal.Loader(store, batch_size=batch, shuffle=True, seed=0)
    seen: list[int] = []
    for batch in loader:
        seen += [image[0] for image in batch["image"]]
    assert "windowed order" in loader.describe()
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


def test_blocks_that_straddle_granules_are_downloaded_at_most_about_twice(s3, s3_proxy, tmp_path):
    # shards of 83 records: most blocks straddle two granules, each granule is needed by
    # two windows; windows sized from page-rounded bytes keep the rest from thrashing
    # (3.0x before: windows did not fit three to the cache and evicted each other)
    assert _epoch_bytes(s3, s3_proxy, tmp_path, 250 << 10) <= 1.7


@pytest.mark.xfail(
    strict=True,
    reason="shards of 83 records: the order's blocks (global ranges of 4) straddle granules, "
    "so a granule is needed by two windows and downloaded twice; fix: align shard ends to granules in the writer, or blocks to shards in the order",
)
def test_blocks_that_straddle_granules_are_not_downloaded_twice(s3, s3_proxy, tmp_path):
    assert _epoch_bytes(s3, s3_proxy, tmp_path, 250 << 10) <= 1.1
