"""The store on object storage: a real S3 server (moto, server mode) on 127.0.0.1.

Round trips through the shard cache, verification of every download, LRU size bound,
and several processes sharing one cache without double downloads or torn files.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from store_records import assert_columns_equal, assert_record_equal, make_record

import epochal
from epochal.store import CorruptStoreError
from epochal.store._remote import ShardCache


def _url() -> str:
    return f"s3://epochal-test/{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("shard_size", [1 << 30, 600], ids=["one-shard", "many-shards"])
def test_round_trip_on_s3(s3, tmp_path, shard_size):
    url, n = _url(), 40
    manifest = epochal.write(
        (make_record(i) for i in range(n)),
        url,
        shard_size=shard_size,
        storage_options=s3["options"],
    )
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path / "cache")
    assert len(store) == n and store.fingerprint == manifest.fingerprint
    for i in (0, n // 2, n - 1):
        assert_record_equal(store[i], make_record(i))
    indices = np.random.default_rng(1).permutation(n)[:25]
    assert_columns_equal(store.get_columns(indices), indices)
    for got, i in zip(store.get_many(indices[:5]), indices[:5], strict=True):
        assert_record_equal(got, make_record(int(i)))
    # one verified file per granule (a few records read with range requests), nothing else
    assert_columns_equal(store.get_columns(np.arange(n)), np.arange(n))
    cached = [f for f in (tmp_path / "cache").rglob("*.unit")]
    granules = sum(-(-s.records // s.granule_records) for s in manifest.shards)
    assert len(cached) == granules
    # the cache alone serves a reopened store: the bucket's shards are no longer needed
    s3["fs"].rm(f"{url}/shards", recursive=True)
    again = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path / "cache")
    assert_columns_equal(again.get_columns(indices), indices)


def test_corrupt_or_missing_remote_shard_is_named_and_not_cached(s3, tmp_path):
    url = _url()
    manifest = epochal.write(
        (make_record(i) for i in range(30)), url, shard_size=600, storage_options=s3["options"]
    )
    first, second = manifest.shards[0], manifest.shards[1].name
    # flip a byte of record 0's image: range reads fetch and check exactly that granule
    index = json.loads(s3["fs"].cat_file(f"{url}/blocks/{first.name}.json"))
    image = [c.name for c in manifest.columns].index("image")
    data = bytearray(s3["fs"].cat_file(f"{url}/shards/{first.name}"))
    data[index["columns"][image]["rows"][0] + 5] ^= 0x01
    s3["fs"].pipe_file(f"{url}/shards/{first.name}", bytes(data))
    s3["fs"].rm_file(f"{url}/shards/{second}")
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    with pytest.raises(CorruptStoreError, match=f"shard shards/{first.name} of {url} is corrupt"):
        store[0]
    with pytest.raises(CorruptStoreError, match=f"shard shards/{second} of {url} is missing"):
        store.get_columns(np.array([len(store) - 1, manifest.shards[0].records]))
    assert not [*tmp_path.rglob(f"b-{first.xxh3}-0.unit"), *tmp_path.rglob("*.tmp-*")]
    with pytest.raises(CorruptStoreError, match=f"2 of {len(manifest.shards)} shards are bad"):
        epochal.verify(url, storage_options=s3["options"])


def test_cache_is_size_bounded(s3, tmp_path):
    url = _url()
    manifest = epochal.write(
        (make_record(i) for i in range(60)), url, shard_size=600, storage_options=s3["options"]
    )
    biggest = max(s.bytes for s in manifest.shards)
    bound = 3 * biggest
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path, cache_size=bound)
    assert_columns_equal(store.get_columns(np.arange(60)), np.arange(60))
    cached = [f.stat().st_blocks * 512 for f in tmp_path.rglob("*") if f.is_file()]
    assert 0 < sum(cached) <= bound < manifest.num_bytes


def _read_all_in_child(url: str, options: dict[str, Any], cache: str, log: str, queue: Any) -> None:
    original = ShardCache._store

    def counting(self: ShardCache, path: str, raw: bytes, **kwargs: Any) -> None:
        original(self, path, raw, **kwargs)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.path.basename(path)}\n".encode())
        os.close(fd)

    ShardCache._store = counting  # type: ignore[method-assign]
    store = epochal.open(url, storage_options=options, cache_dir=cache)
    order = np.random.default_rng(os.getpid()).permutation(len(store))
    queue.put(store.get_columns(order)["label"].tolist() == order.tolist())


def test_processes_share_one_cache_without_double_downloads(s3, tmp_path):
    url = _url()
    manifest = epochal.write(
        (make_record(i) for i in range(80)), url, shard_size=600, storage_options=s3["options"]
    )
    ctx = mp.get_context("fork")  # as DataLoader workers are started; the fs is rebuilt per process
    queue = ctx.Queue()
    log = str(tmp_path / "downloads.log")
    children = [
        ctx.Process(
            target=_read_all_in_child,
            args=(url, s3["options"], str(tmp_path / "cache"), log, queue),
        )
        for _ in range(3)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results == [True] * 3
    downloads = Path(log).read_text().split()
    cached = sorted(
        f.name
        for f in (tmp_path / "cache").rglob("*")
        if f.is_file() and not f.name.startswith(".")
    )
    granules = sum(-(-s.records // s.granule_records) for s in manifest.shards)
    assert len(cached) == granules + 2 * len(manifest.shards)  # + a granule index and head each
    assert sorted(downloads) == cached  # each unit downloaded exactly once
    assert not [f for f in (tmp_path / "cache").rglob("*.tmp-*")]


def test_loader_over_s3_with_workers(s3, tmp_path):
    pytest.importorskip("epochal.loader")
    url, n = _url(), 33
    epochal.write(
        (make_record(i) for i in range(n)), url, shard_size=600, storage_options=s3["options"]
    )
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    loader = epochal.Loader(store, batch_size=5, num_workers=2, seed=3)
    seen = []
    for batch in loader:
        for j, label in enumerate(batch["label"].tolist()):
            seen.append(label)
            assert batch["raw"][j] == make_record(label)["raw"]
            np.testing.assert_array_equal(
                np.asarray(batch["embedding"][j]), make_record(label)["embedding"]
            )
    assert sorted(seen) == list(range(n))


def test_unit_evicted_between_fetch_and_read_is_fetched_again(s3, tmp_path, monkeypatch):
    url = _url()
    epochal.write((make_record(i) for i in range(10)), url, storage_options=s3["options"])
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    original, calls = ShardCache.ensure, []

    def fetch_then_evict(self: ShardCache, k: int, u: int) -> str:
        path = original(self, k, u)
        calls.append(path)
        if len(calls) == 1:
            os.unlink(path)  # another process's eviction, right after our fetch
        return path

    monkeypatch.setattr(ShardCache, "ensure", fetch_then_evict)
    assert_record_equal(store[7], make_record(7))
    assert len(calls) == 2
