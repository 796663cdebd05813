"""Shared by the engine tests: deterministic columns from record ids, a reference store
written by one process, a store-equality check and the local S3 server."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

N = 20_000  # records of every engine-built store in the tests


def batch(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Columns of records ``ids``: a small uint8 image, an int, a float32, text and bytes."""
    ids = np.asarray(ids, dtype=np.int64)
    image = ((ids[:, None] * 7 + np.arange(4 * 4 * 3)) % 251).astype(np.uint8)
    return {
        "id": ids,
        "image": image.reshape(len(ids), 4, 4, 3),
        "score": (ids / 3).astype(np.float32),
        "text": np.array([f"record {i}" + "é" * int(i % 3) for i in ids]),
        "raw": np.array([bytes([i % 256]) * int(i % 5) for i in ids], dtype=object),
    }


def records(ids: np.ndarray) -> Iterator[dict[str, Any]]:
    """The same records one by one, as a user would pass them to ``epochal.write``."""
    cols = batch(ids)
    for i in range(len(ids)):
        yield {
            "id": cols["id"][i],
            "image": cols["image"][i],
            "score": cols["score"][i],
            "text": str(cols["text"][i]),
            "raw": cols["raw"][i],
        }


def assert_same_store(got: Any, want: Any) -> None:
    """Two opened stores hold the same records in the same order, with the same columns."""
    assert len(got) == len(want)
    assert [c.describe() + c.name for c in got.columns] == [
        c.describe() + c.name for c in want.columns
    ]
    everything = np.arange(len(want))
    a, b = got.get_columns(everything), want.get_columns(everything)
    for name in b:
        if isinstance(b[name], np.ndarray):
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            assert a[name] == b[name], name


def shard_files_listed(store_url: str, storage_options: dict | None = None) -> bool:
    """Whether every file under shards/ is one the manifest lists (no attempt left behind)."""
    from epochal.store._fs import locate
    from epochal.store._reader import read_manifest

    loc = locate(store_url, **(storage_options or {}))
    listed = {s.name for s in read_manifest(loc).shards}
    return set(loc.listdir("shards")) == listed


def kill_when_ready(flag: str) -> None:
    """Wait for the task to write its pid to ``flag.pid``, mark ``flag.killed``, SIGKILL it."""
    pid_file = flag + ".pid"
    while not os.path.exists(pid_file):
        time.sleep(0.05)
    time.sleep(0.2)  # the pid is written in one small write; let it land
    with open(pid_file) as f:
        pid = int(f.read())
    with open(flag + ".killed", "w"):
        pass  # before the kill, so the retried task does not wait again
    os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_s3() -> tuple[Any, dict[str, str]]:
    """moto's S3 server on a free port of 127.0.0.1 with bucket ``epochal-test``.

    Returns the server (call ``stop()``) and the storage options to reach it; the
    credentials go into the environment too, for engine workers started afterwards.
    """
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    if not fs.exists("epochal-test"):  # moto's servers in one process share their buckets
        fs.mkdir("epochal-test")
    return server, options
