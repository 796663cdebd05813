"""Fixtures for the store's tests: a real S3 server, a counting proxy, a small tmpfs.

- ``s3``: moto's S3 server on 127.0.0.1 (one per test session) as a dict with
  ``options`` (fsspec storage options), ``fs`` (an ``s3fs.S3FileSystem``) and ``server``
  (:class:`s3_env.S3Server`).
- ``s3_proxy``: a factory ``s3_proxy(latency=0.0, bandwidth=None)`` returning a started
  :class:`s3_env.CountingProxy` in front of that server; read through ``proxy.options``
  and ask ``proxy.traffic(prefix)`` what was downloaded. Stopped after the test.
- ``tmpfs``: a factory ``tmpfs(size_bytes)`` returning the path of a freshly mounted tmpfs
  of that size (unmounted after the test); the test is skipped, with the reason, when
  this process may not mount.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from disk_env import cannot_mount_reason
from disk_env import tmpfs as mount_tmpfs
from s3_env import CountingProxy, moto_server


@pytest.fixture(scope="session")
def s3() -> Iterator[dict[str, Any]]:
    """moto's S3 server on a free port of 127.0.0.1 with the bucket ``epochal-test``."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    import s3fs

    with moto_server() as server:
        # the instance fsspec caches for these options, which epochal's reads use too: a test
        # that changes an object through it also drops the listing the reader has cached
        fs = s3fs.S3FileSystem(**server.options)
        yield {"options": server.options, "fs": fs, "server": server}


@pytest.fixture
def s3_proxy(s3: dict[str, Any]) -> Iterator[Callable[..., CountingProxy]]:
    """Factory of counting proxies in front of the ``s3`` server; all stopped after the test."""
    proxies: list[CountingProxy] = []

    def start(*, latency: float = 0.0, bandwidth: float | None = None) -> CountingProxy:
        proxy = CountingProxy(s3["server"].endpoint_url, latency=latency, bandwidth=bandwidth)
        proxies.append(proxy.start())
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Factory ``tmpfs(size_bytes) -> mount point``; skips the test when mounting is not allowed."""
    reason = cannot_mount_reason()
    if reason:
        pytest.skip(reason)
    with ExitStack() as stack:
        mounts = itertools.count()

        def mount(size: int) -> Path:
            try:
                return stack.enter_context(mount_tmpfs(tmp_path / f"tmpfs-{next(mounts)}", size))
            except PermissionError as err:
                pytest.skip(str(err))

        yield mount
