"""Fixtures every test directory shares, and the ``slow`` marker.

``pytest -m "not slow"`` is the quick local run (demo, examples, torchrun and
multi-process jobs, the S3 server, SIGKILLed subprocesses, benchmarks, Ray, Dask, Spark,
Lightning, Accelerate, the tiny GPT and mypy are left out); CI runs everything with the
README's command. A test is slow when it is in a module of ``_SLOW_MODULES``, uses one of
``_SLOW_FIXTURES``, or carries ``@pytest.mark.slow`` itself (the marker is registered in
pyproject.toml).
"""

from __future__ import annotations

import socket

import pytest

# modules whose every test starts something big: a framework, a cluster, a subprocess run
_SLOW_MODULES = {
    "test_dask.py",
    "test_demo.py",
    "test_distributed.py",
    "test_examples.py",
    "test_frameworks_accelerate.py",
    "test_frameworks_lightning.py",
    "test_interrupt.py",
    "test_loader_distributed.py",
    "test_peers_harness.py",
    "test_ray.py",
    "test_ray_train.py",
    "test_readme.py",
    "test_spark.py",
    "test_store_build_workers.py",
    "test_store_s3.py",
    "test_token_gpt.py",
    "test_types.py",
}
# fixtures that start a server: moto's S3 (tests/store/conftest.py)
_SLOW_FIXTURES = {"s3", "s3_proxy"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.path.name in _SLOW_MODULES or fixtures & _SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
