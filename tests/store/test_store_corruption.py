"""Every corruption is an epochal error naming the shard (or the manifest), never data.

What is caught when (see ``epochal.store._reader``): size, Arrow structure, schema and
record counts lazily on a shard's first use; full checksums with ``verify=True`` or
``epochal.verify``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from store_records import make_record

import epochal
from epochal.store import CorruptStoreError, Manifest, StoreError


@pytest.fixture
def store(tmp_path):
    manifest = epochal.write((make_record(i) for i in range(40)), tmp_path / "s", shard_size=700)
    assert len(manifest.shards) >= 3
    return tmp_path / "s", manifest


def _shard_path(root, manifest, k):
    return root / "shards" / manifest.shards[k].name


def _read_everything(root, **kwargs):
    source = epochal.open(root, **kwargs)
    return source.get_columns(np.arange(len(source)))


def test_intact_store_passes_every_check(store):
    root, manifest = store
    _read_everything(root, verify=True)
    assert epochal.verify(root).fingerprint == manifest.fingerprint


def test_truncated_shard(store):
    root, manifest = store
    path = _shard_path(root, manifest, 1)
    os.truncate(path, path.stat().st_size - 7)
    name = manifest.shards[1].name
    with pytest.raises(CorruptStoreError, match=rf"shard shards/{name} .* is truncated or damaged"):
        _read_everything(root)
    with pytest.raises(
        CorruptStoreError, match=rf"1 of {len(manifest.shards)} shards are bad: shards/{name} has"
    ):
        epochal.verify(root)


def test_flipped_byte_in_record_data_is_caught_by_checksums(store):
    root, manifest = store
    path = _shard_path(root, manifest, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10  # inside the record batch body
    path.write_bytes(bytes(data))
    name = manifest.shards[2].name
    with pytest.raises(CorruptStoreError, match=rf"shard shards/{name} .* is corrupt"):
        epochal.open(root, verify=True)
    with pytest.raises(CorruptStoreError, match=rf"shards/{name} is corrupt \(xxh3"):
        epochal.verify(root)


@pytest.mark.parametrize("offset", [-1, -8, 4], ids=["magic", "footer-length", "leading-magic"])
def test_flipped_byte_in_arrow_structure_is_caught_lazily(store, offset):
    root, manifest = store
    path = _shard_path(root, manifest, 0)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        CorruptStoreError, match=rf"shard shards/{manifest.shards[0].name} .* is damaged"
    ):
        epochal.open(root)[0]


def test_deleted_shard(store):
    root, manifest = store
    _shard_path(root, manifest, 1).unlink()
    name = manifest.shards[1].name
    source = epochal.open(root)
    source[0]  # other shards still read
    with pytest.raises(CorruptStoreError, match=rf"shard shards/{name} of store .* is missing"):
        source.get_columns(np.arange(len(source)))
    with pytest.raises(CorruptStoreError, match=rf"shards/{name} is missing"):
        epochal.verify(root)


def _rewrite_manifest(root, manifest: Manifest, **changes) -> None:
    """A consistently edited manifest (fingerprint and counts recomputed), as a careful hand edit."""
    (root / "manifest.json").write_bytes(dataclasses.replace(manifest, **changes).to_bytes())


def test_manifest_with_wrong_record_count_for_a_shard(store):
    root, manifest = store
    shards = list(manifest.shards)
    shards[1] = dataclasses.replace(shards[1], records=shards[1].records + 1)
    _rewrite_manifest(root, manifest, shards=tuple(shards))
    with pytest.raises(
        CorruptStoreError,
        match=rf"shard shards/{shards[1].name} .* has \d+ records, the manifest says",
    ):
        _read_everything(root)


def test_manifest_with_wrong_checksum_for_a_shard(store):
    root, manifest = store
    shards = list(manifest.shards)
    shards[0] = dataclasses.replace(shards[0], xxh3="0123456789abcdef")
    _rewrite_manifest(root, manifest, shards=tuple(shards))
    with pytest.raises(CorruptStoreError, match=rf"shard shards/{shards[0].name} .* is corrupt"):
        epochal.open(root, verify=True)


def test_manifest_with_another_schema(store):
    root, manifest = store
    columns = tuple(
        dataclasses.replace(c, dtype="<i4") if c.name == "label" else c for c in manifest.columns
    )
    _rewrite_manifest(root, manifest, columns=columns)
    with pytest.raises(
        CorruptStoreError, match=rf"shard shards/{manifest.shards[0].name} .* has schema"
    ) as err:
        epochal.open(root)[0]
    assert "\n" not in str(err.value)  # the CLI prints it as one line


def test_hand_edited_manifest_that_no_longer_adds_up(store):
    root, _ = store
    body = json.loads((root / "manifest.json").read_text())
    body["shards"][0]["records"] += 1  # without fixing num_records and fingerprint
    (root / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(
        CorruptStoreError,
        match=r"manifest .*manifest.json is damaged: its record count or fingerprint",
    ):
        epochal.open(root)


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (
            b'{"format": "epochal-store", "vers',
            CorruptStoreError,
            r"manifest .*manifest.json is not valid JSON",
        ),
        (
            b'{"format": "something-else", "version": 1}',
            CorruptStoreError,
            r"is not an epochal store manifest",
        ),
        (b"[1, 2, 3]", CorruptStoreError, r"is not an epochal store manifest"),
        (
            b'{"format": "epochal-store", "version": 99}',
            StoreError,
            r"format version 99, newer than .* upgrade epochal",
        ),
        (
            b'{"format": "epochal-store", "version": 1, "columns": []}',
            CorruptStoreError,
            r"is damaged",
        ),
    ],
    ids=["truncated-json", "foreign", "not-an-object", "future-version", "missing-fields"],
)
def test_damaged_or_foreign_manifest(store, content, error, match):
    root, _ = store
    (root / "manifest.json").write_bytes(content)
    with pytest.raises(error, match=match):
        epochal.open(root)


_WRITER = textwrap.dedent(
    """
    import sys, time
    import epochal
    sys.path.insert(0, sys.argv[2])
    from store_records import make_record

    def records():
        for i in range(10_000):
            if i == 300:
                print("midway", flush=True)
                time.sleep(60)
            yield make_record(i)

    epochal.write(records(), sys.argv[1], shard_size=500)
    """
)


@pytest.mark.slow
def test_sigkilled_writer_leaves_no_openable_store_and_a_rerun_completes_it(tmp_path):
    dest = tmp_path / "s"
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(dest), os.path.dirname(__file__)],
        stdout=subprocess.PIPE,
        env=os.environ.copy(),
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "midway"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    leftovers = os.listdir(dest / "shards")
    assert len(leftovers) > 10 and not (dest / "manifest.json").exists()
    with pytest.raises(StoreError, match="unfinished build"):
        epochal.open(dest)
    manifest = epochal.write(
        (make_record(i) for i in range(500)), dest, shard_size=4000
    )  # rerun, other sharding
    source = epochal.open(dest, verify=True)
    assert len(source) == 500 and source[499]["label"] == 499
    assert sorted(os.listdir(dest / "shards")) == sorted(
        s.name for s in manifest.shards
    )  # leftovers cleaned
