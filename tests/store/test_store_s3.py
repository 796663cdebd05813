"""The store on object storage: a real S3 server (moto, server mode) on 127.0.0.1.

Round trips through the shard cache, verification of every download, LRU size bound,
and several processes sharing one cache without double downloads or torn files.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from store_records import assert_columns_equal, assert_record_equal, make_record

import epochal
from epochal.store import CorruptStoreError
from epochal.store._remote import ShardCache


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """Starts moto's S3 server on a free port of 127.0.0.1 with one bucket; yields storage options."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("epochal-test")
    try:
        yield {"options": options, "fs": fs}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    cached = [
        f
        for d in (tmp_path / "cache").iterdir()
        if d.is_dir()
        for f in d.iterdir()
        if f.suffix == ".arrow"
    ]
    assert len(cached) == len(manifest.shards)
    # the cache alone serves a reopened store: the bucket's shards are no longer needed
    s3["fs"].rm(f"{url}/shards", recursive=True)
    again = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path / "cache")
    assert_columns_equal(again.get_columns(indices), indices)


def test_corrupt_or_missing_remote_shard_is_named_and_not_cached(s3, tmp_path):
    url = _url()
    manifest = epochal.write(
        (make_record(i) for i in range(30)), url, shard_size=600, storage_options=s3["options"]
    )
    first, second = manifest.shards[0].name, manifest.shards[1].name
    data = bytearray(s3["fs"].cat_file(f"{url}/shards/{first}"))
    data[len(data) // 3] ^= 0x01
    s3["fs"].pipe_file(f"{url}/shards/{first}", bytes(data))
    s3["fs"].rm_file(f"{url}/shards/{second}")
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    with pytest.raises(CorruptStoreError, match=f"shard shards/{first} of {url} is corrupt"):
        store[0]
    with pytest.raises(CorruptStoreError, match=f"shard shards/{second} of {url} is missing"):
        store.get_columns(np.array([len(store) - 1, manifest.shards[0].records]))
    assert not [*tmp_path.rglob("*.arrow"), *tmp_path.rglob("*.tmp-*")]
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
    cached = [f.stat().st_size for f in tmp_path.rglob("*.arrow")]
    assert 0 < sum(cached) <= bound < manifest.num_bytes


def _read_all_in_child(url: str, options: dict[str, Any], cache: str, log: str, queue: Any) -> None:
    original = ShardCache._download

    def counting(self: ShardCache, shard: Any, path: str) -> None:
        original(self, shard, path)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{shard.name}\n".encode())
        os.close(fd)

    ShardCache._download = counting  # type: ignore[method-assign]
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
    assert sorted(downloads) == sorted(s.name for s in manifest.shards)  # each shard exactly once
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


def test_shard_evicted_between_fetch_and_map_is_fetched_again(s3, tmp_path, monkeypatch):
    url = _url()
    epochal.write((make_record(i) for i in range(10)), url, storage_options=s3["options"])
    store = epochal.open(url, storage_options=s3["options"], cache_dir=tmp_path)
    original, calls = ShardCache.fetch, []

    def fetch_then_evict(self: ShardCache, shard: Any, **kwargs: Any) -> str:
        path = original(self, shard, **kwargs)
        calls.append(path)
        if len(calls) == 1:
            os.unlink(path)  # another process's eviction, right after our fetch
        return path

    monkeypatch.setattr(ShardCache, "fetch", fetch_then_evict)
    assert_record_equal(store[7], make_record(7))
    assert len(calls) == 2


def test_verify_true_names_a_corrupt_cached_shard_and_downloads_it_again(s3, tmp_path):
    """A cached copy that went bad on this machine (the bucket's copy is fine):
    ``open(verify=True)`` warns naming the shard and repairs the cache; ``epochal.store
    .verify_cache`` (``epochal verify --cache``) finds and removes such copies too."""
    from epochal.store import StoreWarning, verify_cache

    url, cache = _url(), tmp_path / "cache"
    manifest = epochal.write(
        (make_record(i) for i in range(30)), url, shard_size=600, storage_options=s3["options"]
    )
    store = epochal.open(url, storage_options=s3["options"], cache_dir=cache)
    store.get_columns(np.arange(len(store)))  # every shard cached
    shard = manifest.shards[1]
    (cached,) = cache.rglob(f"*{shard.name}")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x40
    cached.write_bytes(bytes(data))
    with pytest.warns(
        StoreWarning, match=rf"cached copy .* of shard shards/{shard.name} .* is corrupt"
    ):
        fresh = epochal.open(url, verify=True, storage_options=s3["options"], cache_dir=cache)
    assert_columns_equal(fresh.get_columns(np.arange(30)), np.arange(30))
    assert cached.read_bytes() != bytes(data)  # downloaded again, intact
    cached.write_bytes(bytes(data))
    with pytest.warns(StoreWarning, match=rf"shard shards/{shard.name} .* is corrupt"):
        checked, removed = verify_cache(url, cache_dir=cache, storage_options=s3["options"])
    assert checked == len(manifest.shards) and removed == [shard.name]
    assert not cached.exists()


def test_builds_on_s3_hold_leases_and_a_failed_overwrite_keeps_the_old_store(s3, tmp_path):
    """Object storage has no locks: leases are objects with a heartbeat. A second writer
    is refused naming the first; a failed overwrite leaves the old store and no debris; a
    stale lease (its writer died long ago) blocks nobody and is collected."""
    import json
    import time

    from epochal.store import StoreError
    from epochal.store._lease import LEASE_TTL

    url, options, fs = _url(), s3["options"], s3["fs"]
    old = epochal.write(({"label": i} for i in range(10)), url, storage_options=options)
    refused: list[str] = []

    def records():
        for i in range(30):
            if i == 5:
                with pytest.raises(
                    StoreError, match="is being written by another write build"
                ) as e:
                    epochal.write([{"label": 1}], url, overwrite=True, storage_options=options)
                refused.append(str(e.value))
            if i == 20:
                raise RuntimeError("source broke")
            yield {"label": 100 + i}

    with pytest.raises(RuntimeError, match="source broke"):
        epochal.write(records(), url, overwrite=True, shard_size=64, storage_options=options)
    assert refused and f"pid {os.getpid()}" in refused[0]
    store = epochal.open(url, verify=True, storage_options=options, cache_dir=tmp_path / "c")
    assert store.get_columns(np.arange(len(store)))["label"].tolist() == list(range(10))
    fs.invalidate_cache()
    root = url.removeprefix("s3://")
    assert sorted(os.path.basename(p) for p in fs.ls(f"{root}/shards")) == [
        s.name for s in old.shards
    ]
    assert not fs.exists(f"{root}/_builds") or not fs.ls(f"{root}/_builds")
    stale = time.time() - 2 * LEASE_TTL
    lease = {"name": "part-00000-dead", "kind": "write", "pid": 1, "host": "gone"}
    fs.pipe(
        f"{root}/_builds/part-00000-dead.json",
        json.dumps({**lease, "started": stale, "heartbeat": stale}).encode(),
    )
    epochal.write([{"label": 7}], url, overwrite=True, storage_options=options)
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/_builds/part-00000-dead.json")
