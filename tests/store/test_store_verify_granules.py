"""``epochal verify`` checks each shard's granule index (``blocks/<shard>.json``) too.

Range reads of a remote store check every granule against that index, so a missing or
wrong index makes those reads fail although every shard's own checksum is right: verify
must say so, naming the shard and, for a wrong granule digest, the granule.
"""

from __future__ import annotations

import json
import uuid

import pytest
import xxhash

import epochal
from epochal.cli import main
from epochal.store import CorruptStoreError


def _store(path):
    return epochal.write(
        ({"text": f"record {i} " * (i % 7 + 1), "label": i} for i in range(120)),
        path,
        shard_size=2000,
    )


def _rewrite_sidecar(root, shard, edit) -> None:
    """Edit a shard's sidecar and give the manifest its new digest: a consistent but wrong
    index, which only the check against the shard's bytes finds."""
    sidecar = root / "blocks" / f"{shard.name}.json"
    body = json.loads(sidecar.read_bytes())
    edit(body)
    raw = json.dumps(body, separators=(",", ":")).encode()
    sidecar.write_bytes(raw)
    manifest = json.loads((root / "manifest.json").read_bytes())
    for entry in manifest["shards"]:
        if entry["name"] == shard.name:
            entry["granules_xxh3"] = xxhash.xxh3_64_hexdigest(raw)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_verify_names_the_shard_and_granule_of_a_wrong_sidecar_entry(tmp_path, capsys):
    root = tmp_path / "store"
    manifest = _store(root)
    assert len(manifest.shards) >= 3 and manifest.shards[1].granule_records is not None
    assert main(["verify", str(root)]) == 0
    shard = manifest.shards[1]
    g = shard.granule_records

    def flip(body):
        body["granules"][2] = "0123456789abcdef"

    _rewrite_sidecar(root, shard, flip)
    with pytest.raises(CorruptStoreError) as err:
        epochal.verify(root)
    message = str(err.value)
    assert "1 of" in message and f"shards/{shard.name}" in message
    assert f"granule 2 (records {2 * g}..{3 * g - 1})" in message
    assert f"blocks/{shard.name}.json says 0123456789abcdef" in message
    assert main(["verify", str(root)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"granule 2 (records {2 * g}" in lines[0]


def test_verify_reports_a_missing_or_tampered_sidecar(tmp_path):
    root = tmp_path / "store"
    manifest = _store(root)
    first, last = manifest.shards[0], manifest.shards[-1]
    (root / "blocks" / f"{first.name}.json").unlink()
    sidecar = root / "blocks" / f"{last.name}.json"
    sidecar.write_bytes(sidecar.read_bytes().replace(b'"version":1', b'"version":1 '))
    with pytest.raises(CorruptStoreError) as err:
        epochal.verify(root)
    message = str(err.value)
    assert "2 of" in message
    assert f"shards/{first.name}: its granule index blocks/{first.name}.json is missing" in message
    assert f"shards/{last.name}: its granule index is corrupt" in message


def test_verify_checks_the_sidecar_head_of_a_remote_store(s3, tmp_path):
    # remote shards are checked from memory, not a map: the same checks on that path, here
    # a head digest that does not match the shard's offsets
    name = uuid.uuid4().hex[:10]
    url = f"s3://epochal-test/{name}"
    local = tmp_path / "store"
    manifest = _store(local)
    shard = manifest.shards[0]
    _rewrite_sidecar(local, shard, lambda body: body.update(head_xxh3="fedcba9876543210"))
    s3["fs"].put(str(local) + "/", f"epochal-test/{name}/", recursive=True)
    with pytest.raises(CorruptStoreError, match=rf"shards/{shard.name} is corrupt: its offsets"):
        epochal.verify(url, storage_options=s3["options"])
