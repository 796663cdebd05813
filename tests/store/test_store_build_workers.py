"""``epochal build --workers N``: the store (shards, bytes, fingerprint) does not depend on N.

Every parallel format is split into several parts here (small part sizes), so the pool
really runs, and each build is compared with ``--workers 1`` and with ``epochal.write``
of the same records one by one.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

import epochal
from epochal.cli import main
from epochal.store import _ingest
from epochal.store._ingest import ingest


@pytest.fixture(autouse=True)
def _small_parts(monkeypatch):
    monkeypatch.setattr(_ingest, "_PART_BYTES", 300)
    monkeypatch.setattr(_ingest, "_PART_IMAGES", 3)


def _images(root) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(11):
        path = root / f"class{i % 3}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue())


def _jsonl(path) -> None:
    rows = [
        {"id": i, "text": "é" * (i % 5), "vec": [i, i / 2], "ok": i % 2 == 0} for i in range(60)
    ]
    path.write_text(
        "".join(json.dumps(r) + "\n" + ("\n" if i % 7 == 0 else "") for i, r in enumerate(rows))
    )


def _csv(path) -> None:
    path.write_text("a,b\n" + "".join(f"{i},{i * 0.5}\n" for i in range(40)))


def _parquet(folder) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    for f in range(2):
        table = pa.table({"x": np.arange(f * 30, f * 30 + 30), "s": [f"v{i}" for i in range(30)]})
        pq.write_table(table, folder / f"{f}.parquet", row_group_size=8)


def _tars(folder) -> None:
    folder.mkdir()
    for t in range(3):
        with tarfile.open(folder / f"{t:03d}.tar", "w") as tar:
            for i in range(4):
                for ext, data in (("jpg", bytes([t, i]) * 9), ("cls", str(i).encode())):
                    info = tarfile.TarInfo(f"s{t}{i}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


MAKERS = {
    "imagefolder": _images,
    "jsonl": _jsonl,
    "csv": _csv,
    "parquet": _parquet,
    "webdataset": _tars,
}
NAMES = {"jsonl": "d.jsonl", "csv": "d.csv"}


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_workers_build_the_same_store(tmp_path, fmt, capsys):
    src = tmp_path / NAMES.get(fmt, "input")
    MAKERS[fmt](src)
    source = ingest(src)
    assert source.parts is not None
    assert fmt == "csv" or len(list(ingest(src).parts)) > 2  # the pool gets work
    single = epochal.write(
        source.records, tmp_path / "rows", shard_size=300, metadata=source.metadata
    )
    prints = {}
    for workers in (1, 2):
        dest = tmp_path / f"w{workers}"
        argv = [
            "build",
            str(src),
            str(dest),
            "--shard-size-mb",
            str(300 / 2**20),
            "--workers",
            str(workers),
        ]
        assert main(argv) == 0
        assert f"built {dest}: {single.num_records} records" in capsys.readouterr().out
        prints[workers] = epochal.open(dest).fingerprint
    assert prints[1] == prints[2] == single.fingerprint
    assert len(single.shards) > 1


def test_a_bad_record_in_a_workers_part_is_named_as_one_process_names_it(tmp_path, capsys):
    src = tmp_path / "d.jsonl"
    rows = [{"x": i} for i in range(40)]
    rows[33] = {"x": "thirty-three"}
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    messages = []
    for workers in (1, 2):
        assert (
            main(["build", str(src), str(tmp_path / f"s{workers}"), "--workers", str(workers)]) == 1
        )
        messages.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert messages[0] == messages[1]
    assert "record 33: column 'x' expects scalar[<i8]" in messages[0]
    assert main(["build", str(src), str(tmp_path / "s0"), "--workers", "0"]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
