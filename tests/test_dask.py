"""epochal.dask on a real ``distributed.LocalCluster`` with 2 worker processes.

A 20,000-record store from a bag and from a dataframe, locally and on the local S3
server, equals (record for record) ``epochal.write`` of the same records in one process;
a worker SIGKILLed mid-task is replaced, its task rerun, and every record is in the
store exactly once.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid

import numpy as np
import pytest

import epochal
from engine_data import (
    N,
    assert_same_store,
    batch,
    kill_when_ready,
    records,
    shard_files_listed,
    start_s3,
)

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")
import dask.bag as db  # noqa: E402
import dask.dataframe as dd  # noqa: E402

import epochal.dask  # noqa: E402

SHARD = 64 << 10  # several shards per partition


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit="1GiB",
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    dest = tmp_path_factory.mktemp("ref") / "one-process"
    epochal.write(records(np.arange(N)), dest, shard_size=SHARD)
    return epochal.open(dest)


def _bag(n: int = N, parts: int = 6):
    return db.from_sequence(range(n), npartitions=parts).map_partitions(
        lambda ids: list(records(np.fromiter(ids, dtype=np.int64)))
    )


def _frame(n: int = N, parts: int = 5):
    pd = pytest.importorskip("pandas")

    def part(start: int, stop: int):
        cols = batch(np.arange(start, stop))
        return pd.DataFrame({k: cols[k] for k in ("id", "score", "text")})

    edges = np.linspace(0, n, parts + 1).astype(int)
    return dd.from_delayed(
        [dask.delayed(part)(int(a), int(b)) for a, b in itertools.pairwise(edges)],
        meta=part(0, 1).iloc[:0],
    )


def test_bag_to_a_local_store(client, tmp_path, reference):
    dest = str(tmp_path / "bag")
    manifest = epochal.dask.write_collection(_bag(), dest, shard_size=SHARD, scheduler=client)
    assert manifest.num_records == N and len(manifest.shards) > 6
    assert_same_store(epochal.open(dest), reference)


def test_dataframe_to_a_local_store(client, tmp_path):
    dest = str(tmp_path / "frame")
    epochal.dask.write_collection(_frame(), dest, shard_size=SHARD, scheduler=client)
    want = tmp_path / "want"
    cols = ("id", "score", "text")
    epochal.write(({k: r[k] for k in cols} for r in records(np.arange(N))), want, shard_size=SHARD)
    # record for record; the shards differ: each partition ends its last shard early
    assert_same_store(epochal.open(dest), epochal.open(want))


def test_bag_to_s3(client, tmp_path, reference):
    server, options = start_s3()
    try:
        url = f"s3://epochal-test/{uuid.uuid4().hex[:8]}"
        epochal.dask.write_collection(
            _bag(), url, shard_size=SHARD, storage_options=options, scheduler=client
        )
        store = epochal.open(url, storage_options=options, cache_dir=tmp_path / "cache")
        assert_same_store(store, reference)
        assert shard_files_listed(url, options)
    finally:
        server.stop()


def _write_part_killed_once(partition: int, parts: int, dest: str, flag: str) -> dict:
    """One partition's task; partition 2 waits to be killed after its first shard, once."""
    ids = np.array_split(np.arange(N), parts)[partition]

    def recs():
        for i, record in enumerate(records(ids)):
            if partition == 2 and i == 2000 and not os.path.exists(flag + ".killed"):
                with open(flag + ".pid", "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(120)
            yield record

    return epochal.dask.write_partition(
        recs(), dest, partition=partition, num_partitions=parts, shard_size=SHARD
    )


def test_a_worker_killed_mid_task_leaves_one_copy_of_every_record(client, tmp_path, reference):
    flag, dest, parts = str(tmp_path / "worker"), str(tmp_path / "killed"), 5

    killer = threading.Thread(target=kill_when_ready, args=(flag,), daemon=True)
    killer.start()
    # the recipe for a custom graph: one write_partition per partition, then merge
    futures = [
        client.submit(_write_part_killed_once, i, parts, dest, flag, pure=False)
        for i in range(parts)
    ]
    results = client.gather(futures)
    killer.join(timeout=5)
    assert os.path.exists(flag + ".killed")  # the worker really died mid-task
    assert len(os.listdir(os.path.join(dest, "_partitions"))) >= parts
    assert [r["partition"] for r in results] == list(range(parts))
    epochal.merge(dest)
    assert_same_store(epochal.open(dest), reference)
    assert shard_files_listed(dest)
