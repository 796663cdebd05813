"""The test infrastructure itself: the counting proxy in front of moto, the tmpfs, statvfs.

The remote-store tests and benchmarks/bench_remote.py trust these numbers (bytes a
reader downloaded, latency it paid, disk it really held), so each is checked against a
known answer here.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import time
import uuid

import numpy as np
import pytest
from disk_env import PeakSampler, tree_bytes, used_bytes
from s3_env import CountingProxy, Traffic, fetch_traffic

import epochal


def _put(s3, size: int, *, seed: int = 0) -> tuple[str, bytes]:
    key = f"{s3['server'].bucket}/infra/{uuid.uuid4().hex[:10]}.bin"
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    s3["fs"].pipe_file(key, data)
    return key, data


def _fs(proxy: CountingProxy):
    import s3fs

    return s3fs.S3FileSystem(**proxy.options, skip_instance_cache=True, default_cache_type="none")


def test_proxy_counts_exactly_the_bytes_of_whole_and_range_gets(s3, s3_proxy):
    key, data = _put(s3, 3_000_001)
    proxy = s3_proxy()
    fs = _fs(proxy)
    assert fs.cat_file(key) == data
    assert proxy.traffic(key) == Traffic(requests=1, bytes=len(data))
    proxy.reset()
    ranges = [(0, 1), (17, 4113), (1_000_000, 2_500_000), (len(data) - 5, len(data))]
    for start, stop in ranges:
        assert fs.cat_file(key, start=start, end=stop) == data[start:stop]
    assert proxy.traffic(key) == Traffic(len(ranges), sum(b - a for a, b in ranges))
    assert proxy.per_key() == {key: proxy.traffic(key)}  # nothing else was downloaded
    assert proxy.traffic(key, method="HEAD").requests == 0
    assert fetch_traffic(proxy.endpoint_url, key) == proxy.traffic(key)  # as other processes see it
    assert fetch_traffic(proxy.endpoint_url, "no-such-prefix") == Traffic()


def test_proxy_counts_per_key_and_by_prefix_across_threads(s3, s3_proxy):
    objects = [_put(s3, 200_000 + i, seed=i) for i in range(4)]
    proxy = s3_proxy()
    fs = _fs(proxy)

    def read(key: str) -> None:
        for start in range(0, 200_000, 50_000):
            fs.cat_file(key, start=start, end=start + 50_000)

    threads = [threading.Thread(target=read, args=(key,)) for key, _ in objects for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key, _ in objects:
        assert proxy.traffic(key) == Traffic(requests=8, bytes=2 * 200_000)
    prefix = objects[0][0].rsplit("/", 1)[0] + "/"
    assert proxy.traffic(prefix) == Traffic(requests=32, bytes=8 * 200_000)


def test_proxy_adds_its_latency_to_every_request(s3, s3_proxy):
    key, data = _put(s3, 1000)
    latency = 0.25
    fast, slow = s3_proxy(), s3_proxy(latency=latency)
    timings: dict[str, list[float]] = {}
    for name, proxy in (("fast", fast), ("slow", slow)):
        fs = _fs(proxy)
        fs.cat_file(key, start=0, end=10)  # connection set up outside the timing
        timings[name] = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert fs.cat_file(key, start=0, end=10) == data[:10]
            timings[name].append(time.perf_counter() - t0)
    assert min(timings["slow"]) >= latency  # every request paid it...
    assert min(timings["fast"]) < latency  # ...and it is the proxy's, not the server's
    assert slow.traffic(key).requests == 6


def test_proxy_caps_bandwidth_of_all_connections_together(s3, s3_proxy):
    key, data = _put(s3, 1_000_000)
    proxy = s3_proxy(bandwidth=4_000_000)  # bytes/s
    fs = _fs(proxy)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=fs.cat_file, args=(key,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    assert proxy.traffic(key).bytes == 2 * len(data)
    assert elapsed >= 2 * len(data) / 4_000_000 * 0.9  # 0.5 s at the cap, whatever the threads


def test_epochal_store_reads_through_the_proxy_and_is_counted(s3, s3_proxy, tmp_path):
    url = s3["server"].url(f"infra/{uuid.uuid4().hex[:10]}")
    manifest = epochal.write(
        ({"x": np.full(100, i, np.int32), "label": i} for i in range(50)),
        url,
        shard_size=2000,
        storage_options=s3["options"],
    )
    proxy = s3_proxy()
    store = epochal.open(url, storage_options=proxy.options, cache_dir=tmp_path)
    got = store.get_columns(np.arange(50))
    np.testing.assert_array_equal(got["label"], np.arange(50))
    shards = proxy.traffic(url.removeprefix("s3://") + "/shards/")
    # granules by byte range: exactly the records' bytes once (not the Arrow metadata)
    assert shards.bytes == 50 * (100 * 4 + 8) < manifest.num_bytes


def test_proxy_stops_by_itself_after_its_lifetime(s3):
    proxy = CountingProxy(s3["server"].endpoint_url, lifetime=0.3).start()
    assert proxy.running
    deadline = time.monotonic() + 10
    while proxy.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proxy.running


def test_tmpfs_bound_is_real_writing_past_it_fails_with_enospc(tmpfs):
    mount = tmpfs(1 << 20)
    assert used_bytes(mount) == 0
    with open(mount / "fits", "wb") as f:
        f.write(b"x" * (512 << 10))
    assert used_bytes(mount) == 512 << 10
    with pytest.raises(OSError) as err, open(mount / "too-much", "wb") as f:
        f.write(b"y" * (1 << 20))
        f.flush()
    assert err.value.errno == errno.ENOSPC


def test_statvfs_counts_deleted_files_still_open_or_mapped(tmpfs):
    mount = tmpfs(4 << 20)
    size = 1 << 20
    with PeakSampler(mount, interval=0.001) as disk:
        path = mount / "shard"
        path.write_bytes(b"z" * size)
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        os.unlink(path)
        assert tree_bytes(mount) == 0  # the names say the cache is empty...
        assert disk.sample() == size  # ...the disk says the mapping still holds it
        mapped.close()
        assert used_bytes(mount) == 0
    assert disk.baseline == 0 and disk.peak == size and disk.samples >= 1


def test_peak_sampler_catches_a_transient_peak(tmpfs):
    mount = tmpfs(8 << 20)

    def burst() -> None:
        time.sleep(0.05)
        (mount / "burst").write_bytes(b"b" * (3 << 20))
        time.sleep(0.05)
        (mount / "burst").unlink()

    with PeakSampler(mount) as disk:
        thread = threading.Thread(target=burst)
        thread.start()
        thread.join()
    assert used_bytes(mount) == 0
    assert disk.peak_above_baseline == 3 << 20


class _CountingBuffer:
    """A moto key's value buffer that counts the bytes the server reads out of it."""

    def __init__(self, buffer) -> None:
        self.buffer = buffer
        self.read_bytes = 0

    def read(self, *args):
        data = self.buffer.read(*args)
        self.read_bytes += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self.buffer, name)


def test_the_server_reads_only_the_range_of_a_range_get_and_answers_as_before(s3):
    """serve_ranges_in_place: a plain range GET costs the server O(range), like S3; the
    answers (bytes, Content-Range, errors, whole GETs, ranges it does not take) are moto's."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    key, data = _put(s3, 9 << 20)  # above moto's ~5 MiB in-memory buffer: a temp file
    bucket, name = key.split("/", 1)
    fake = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_object(bucket, name)
    counting = _CountingBuffer(fake._value_buffer)
    fake._value_buffer = counting
    client = boto3.client("s3", endpoint_url=s3["server"].endpoint_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def get(header: str):
        counting.read_bytes = 0
        got = client.get_object(Bucket=bucket, Key=name, Range=header)
        return got["Body"].read(), got["ContentRange"], counting.read_bytes

    n = len(data)
    for a, b in [(0, 0), (17, 200_016), (n - 3, n - 1), (5 << 20, (5 << 20) + 65_535)]:
        assert get(f"bytes={a}-{b}") == (data[a : b + 1], f"bytes {a}-{b}/{n}", b + 1 - a)
    assert get(f"bytes={n - 10}-{n + 50}") == (data[-10:], f"bytes {n - 10}-{n - 1}/{n}", 10)
    assert get(f"bytes={n - 4}-") == (data[-4:], f"bytes {n - 4}-{n - 1}/{n}", 4)
    # a suffix range is moto's own path (the whole value read), with the same answer
    assert get("bytes=-6")[:2] == (data[-6:], f"bytes {n - 6}-{n - 1}/{n}")
    counting.read_bytes = 0
    assert client.get_object(Bucket=bucket, Key=name)["Body"].read() == data
    assert counting.read_bytes == n  # a whole GET reads the whole object
    with pytest.raises(client.exceptions.ClientError, match="InvalidRange"):
        client.get_object(Bucket=bucket, Key=name, Range=f"bytes={n}-{n + 5}")
