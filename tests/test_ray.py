"""epochal.ray on a real local Ray (``ray.init(num_cpus=2)``, a small object store).

A 20,000-record store from a Ray Dataset, locally and on the local S3 server, equals
(record for record) ``epochal.write`` of the same records in one process; a worker
SIGKILLed mid-task is retried by Ray, and every record is in the store exactly once.
"""

from __future__ import annotations

import functools
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

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
import epochal.ray  # noqa: E402

SHARD = 64 << 10  # several shards per task
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def cluster():
    # workers import this module's helpers (map functions pickle by reference)
    ray.init(
        num_cpus=2,
        object_store_memory=256 << 20,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": TESTS}},
    )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the store keeps the dataset's order
    context.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    dest = tmp_path_factory.mktemp("ref") / "one-process"
    epochal.write(records(np.arange(N)), dest, shard_size=SHARD)
    return epochal.open(dest)


def _columns(rows: dict) -> dict:
    return batch(rows["id"])


def _dataset(fn=_columns):
    return ray.data.range(N, override_num_blocks=6).map_batches(fn, batch_format="numpy")


def test_dataset_to_a_local_store(cluster, tmp_path, reference):
    dest = str(tmp_path / "ray")
    manifest = epochal.ray.write_dataset(_dataset(), dest, shard_size=SHARD)
    assert manifest.num_records == N and len(manifest.shards) > 6
    assert_same_store(epochal.open(dest), reference)
    with pytest.raises(epochal.Error, match="already holds a finished store"):
        epochal.ray.write_dataset(_dataset(), dest, shard_size=SHARD)


def test_dataset_to_s3(cluster, tmp_path, reference):
    server, options = start_s3()
    try:
        url = f"s3://epochal-test/{uuid.uuid4().hex[:8]}"
        epochal.ray.write_dataset(_dataset(), url, shard_size=SHARD, storage_options=options)
        store = epochal.open(url, storage_options=options, cache_dir=tmp_path / "cache")
        assert_same_store(store, reference)
        assert shard_files_listed(url, options)
    finally:
        server.stop()


def _columns_killed_once(rows: dict, flag: str) -> dict:
    """The batch of records 12,500.. (the second of its task) waits, once, to be killed."""
    if rows["id"][0] == 12_500 and not os.path.exists(flag + ".killed"):
        with open(flag + ".pid", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    return batch(rows["id"])


def test_a_worker_killed_mid_task_leaves_one_copy_of_every_record(cluster, tmp_path, reference):
    flag = str(tmp_path / "worker")
    ds = ray.data.range(N, override_num_blocks=4).map_batches(
        functools.partial(_columns_killed_once, flag=flag), batch_format="numpy", batch_size=2500
    )

    killer = threading.Thread(target=kill_when_ready, args=(flag,), daemon=True)
    killer.start()
    dest = str(tmp_path / "killed")
    epochal.ray.write_dataset(ds, dest, shard_size=SHARD)
    killer.join(timeout=5)
    assert os.path.exists(flag + ".killed")  # the worker really died mid-task
    assert_same_store(epochal.open(dest), reference)
    assert shard_files_listed(dest)
