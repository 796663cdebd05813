"""``epochal build --workers N``: the store (shards, bytes, fingerprint) does not depend on N.

Every parallel format is split into several parts here (small part sizes), so the pool
really runs, and each build is compared with ``--workers 1`` and with ``epochal.write``
of the same records one by one.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import epochal
from _budget import examples
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


def _build_messages(tmp_path, src, capsys) -> list[str]:
    messages = []
    for workers in (1, 2):
        dest = tmp_path / f"bad{workers}"
        assert main(["build", str(src), str(dest), "--workers", str(workers)]) == 1
        messages.append(capsys.readouterr().err.strip().splitlines()[-1])
    return messages


@pytest.mark.parametrize("bad", [1, 12])  # in the first part (parsed in a worker too), a later one
def test_the_first_error_of_a_part_is_the_one_process_error(tmp_path, capsys, bad):
    src = tmp_path / "d.jsonl"
    lines = [json.dumps({"x": i}) for i in range(40)]
    lines[bad] = json.dumps({"x": "a string"})
    lines[bad + 2] = "{not json"  # same part, after the bad record: never reached
    src.write_text("\n".join(lines) + "\n")
    messages = _build_messages(tmp_path, src, capsys)
    assert messages[0] == messages[1]
    assert f"record {bad}: column 'x' expects scalar[<i8]" in messages[0]


def _sized_images(root) -> dict[str, tuple[int, int]]:
    pytest.importorskip("PIL")
    from PIL import Image

    rng = np.random.default_rng(1)
    sizes = {}
    shapes = [(40, 60), (90, 30), (25, 25), (16, 50), (70, 44)]
    for i in range(10):
        h, w = shapes[i % len(shapes)]
        rel = f"c{i % 2}/{i:02d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        mode = "L" if i == 3 else "RGBA" if i == 4 else "RGB"
        pixels = rng.integers(0, 256, (h, w, {"L": 1, "RGB": 3, "RGBA": 4}[mode]), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(root / rel)
        sizes[rel] = (w, h)
    return sizes


def test_resize_scales_the_shorter_side_and_stores_jpeg_the_same_for_any_workers(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "imgs"
    sizes = _sized_images(root)
    prints = []
    for workers, run in ((1, "a"), (2, "a"), (2, "b")):
        dest = tmp_path / f"r{workers}{run}"
        argv = ["build", str(root), str(dest), "--resize", "20", "--workers", str(workers)]
        assert main(argv) == 0, capsys.readouterr().err
        store = epochal.open(dest)
        prints.append(store.fingerprint)
    assert prints[0] == prints[1] == prints[2]  # deterministic, and independent of workers
    assert store.metadata["image_transform"] == {
        "resize_shorter_side": 20,
        "format": "JPEG",
        "quality": 90,
    }
    for i in range(len(store)):
        row = store[i]
        w, h = sizes[row["path"]]
        image = Image.open(io.BytesIO(row["image"]))
        assert image.format == "JPEG"
        assert image.mode == ("L" if row["path"].endswith("03.png") else "RGB")
        assert min(image.size) == 20
        assert image.size == (int(w * 20 / min(w, h) + 0.5), int(h * 20 / min(w, h) + 0.5))
    # quality alone re-encodes at the original size; a lower quality makes smaller files
    for quality in (30, 90):
        dest = tmp_path / f"q{quality}"
        assert main(["build", str(root), str(dest), "--jpeg-quality", str(quality)]) == 0
    low, high = epochal.open(tmp_path / "q30"), epochal.open(tmp_path / "q90")
    for i in range(len(low)):
        assert Image.open(io.BytesIO(low[i]["image"])).size == sizes[low[i]["path"]]
    assert sum(len(low[i]["image"]) for i in range(len(low))) < sum(
        len(high[i]["image"]) for i in range(len(high))
    )


def test_resize_usage_errors_and_an_undecodable_image(tmp_path, capsys):
    root = tmp_path / "imgs"
    _sized_images(root)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"x": 1}\n')
    for argv, message in (
        ([str(root), "--resize", "0"], "--resize must be at least 1 pixel, got 0"),
        ([str(root), "--jpeg-quality", "96"], "--jpeg-quality must be from 1 to 95, got 96"),
        ([str(jsonl), "--resize", "8"], "apply to image folders only; the input is jsonl"),
    ):
        assert main(["build", argv[0], str(tmp_path / "never"), *argv[1:]]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    (root / "c1" / "07.png").write_bytes(b"not a png")
    messages = []
    for workers in (1, 2):
        dest = tmp_path / f"bad{workers}"
        assert (
            main(["build", str(root), str(dest), "--resize", "8", "--workers", str(workers)]) == 1
        )
        messages.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert messages[0] == messages[1]
    assert "cannot decode image c1/07.png" in messages[0]


def _rows_jsonl(path, lengths, blank_every) -> None:
    lines = []
    for i, n in enumerate(lengths):
        lines.append(json.dumps({"id": i, "text": "é" * n, "vec": [i, i / 2]}))
        if blank_every and i % blank_every == 0:
            lines.append("")  # blank lines are skipped, and move part boundaries
    path.write_text("\n".join(lines) + "\n")


def _block_build(src, dest, workers, shard_size):
    """What ``epochal build --workers N`` writes, without the CLI around it."""
    from epochal.store._build_pool import parallel_blocks
    from epochal.store._record_blocks import Blocks

    source = ingest(src)
    blocks = Blocks(parallel_blocks(source.parts, workers, source.columns))
    return epochal.write(blocks, dest, shard_size=shard_size, metadata=source.metadata)


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # _small_parts: reset per example
)
@given(
    lengths=st.lists(st.integers(0, 60), min_size=1, max_size=80),
    blank_every=st.integers(0, 9),
    part_bytes=st.integers(1, 700),
    shard_size=st.integers(1, 4000),
    exact=st.none() | st.integers(0, 79),
)
def test_any_parts_and_shard_size_give_the_one_process_shards(
    tmp_path_factory, lengths, blank_every, part_bytes, shard_size, exact
):
    """Shard boundaries are the row writer's, whatever the parts (tapered or not) and
    however the records' sizes fall on them; so are the bytes and the fingerprint."""
    if exact is not None:  # a shard size the first records fill exactly (the boundary case)
        # the row writer's sizes: id 8, vec 2 * 8, text its characters + 8
        shard_size = sum(32 + n for n in lengths[: exact % len(lengths) + 1])
    tmp = tmp_path_factory.mktemp("prop")
    src = tmp / "d.jsonl"
    _rows_jsonl(src, lengths, blank_every)
    rows = epochal.write(ingest(src).records, tmp / "rows", shard_size=shard_size)
    with mock.patch.object(_ingest, "_PART_BYTES", part_bytes):
        assert len(list(ingest(src).parts)) >= 1
        built = {w: _block_build(src, tmp / f"w{w}", w, shard_size) for w in (1, 2)}
    for manifest in built.values():
        assert [(s.records, s.bytes, s.xxh3) for s in manifest.shards] == [
            (s.records, s.bytes, s.xxh3) for s in rows.shards
        ]
        assert manifest.fingerprint == rows.fingerprint
    assert epochal.open(tmp / "w2")[len(lengths) - 1]["id"] == len(lengths) - 1


def test_workers_hand_blocks_over_in_memory_files_and_leave_no_descriptor_open(
    tmp_path, monkeypatch
):
    from epochal.store import _build_pool

    if not _build_pool._Channel.available():
        pytest.skip("memfd_create / SCM_RIGHTS: Linux only; elsewhere blocks come pickled")
    src = tmp_path / "d.jsonl"
    _jsonl(src)
    taken = []
    take = _build_pool._Channel.take
    monkeypatch.setattr(
        _build_pool._Channel, "take", lambda self, sent: taken.append(1) or take(self, sent)
    )
    before = sorted(os.listdir("/proc/self/fd"))
    manifest = _block_build(src, tmp_path / "s", 2, 300)
    assert len(taken) == len(list(ingest(src).parts))  # every block came through the channel
    assert manifest.fingerprint == _block_build(src, tmp_path / "one", 1, 300).fingerprint
    assert sorted(os.listdir("/proc/self/fd")) == before  # no memory file, no socket left


@pytest.mark.parametrize("bad", [0, 17, 38])  # first line, a middle part, the last part
def test_a_bad_line_is_numbered_from_the_start_of_the_file_in_any_part(tmp_path, capsys, bad):
    src = tmp_path / "d.jsonl"
    lines = [json.dumps({"x": i}) for i in range(40)]
    lines[5] = ""  # a blank line counts as a line
    lines[bad] = "[1, 2]" if bad == 17 else "{not json"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(epochal.Error) as caught:
        list(ingest(src).records)  # the one-process reading of the whole file
    assert f"d.jsonl:{bad + 1}: " in str(caught.value)
    messages = _build_messages(tmp_path, src, capsys)
    assert messages[0] == messages[1]
    assert messages[0].endswith(str(caught.value))
