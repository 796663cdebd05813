"""``epochal build`` inputs: every format on small fixtures made here, good and malformed."""

from __future__ import annotations

import io
import itertools
import json
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import epochal
from epochal.store import StoreError, _ingest
from epochal.store._ingest import detect, ingest, line_ranges


def _build(src, dest, fmt="auto"):
    result = ingest(src, fmt)
    epochal.write(result.records, dest, metadata=result.metadata, shard_size=2000)
    return epochal.open(dest)


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_folder(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "images"
    files = {"dog/b.png": (0, 0, 255), "cat/a.png": (255, 0, 0), "cat/c.PNG": (0, 255, 0)}
    for rel, color in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_png(color))
    (root / "cat" / "notes.txt").write_text("not an image")
    assert detect(str(root)) == "imagefolder"
    store = _build(root, tmp_path / "s")
    assert store.metadata["classes"] == ["cat", "dog"]
    rows = [store[i] for i in range(len(store))]
    assert [(r["path"], int(r["label"])) for r in rows] == [
        ("cat/a.png", 0),
        ("cat/c.PNG", 0),
        ("dog/b.png", 1),
    ]
    from PIL import Image

    assert Image.open(io.BytesIO(rows[2]["image"])).getpixel((0, 0)) == (0, 0, 255)


def test_jsonl(tmp_path):
    src = tmp_path / "d.jsonl"
    lines = [{"id": i, "text": f"t{i}", "vec": [i, i + 0.5], "meta": {"k": i}} for i in range(5)]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    store = _build(src, tmp_path / "s")
    cols = store.get_columns(np.arange(5))
    assert cols["id"].tolist() == list(range(5)) and cols["text"] == [f"t{i}" for i in range(5)]
    assert cols["vec"].shape == (5, 2) and cols["vec"][3].tolist() == [3, 3.5]
    assert json.loads(cols["meta"][4]) == {"k": 4}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{"id": 2,,}\n')
    with pytest.raises(StoreError, match=r"bad.jsonl:2: not valid JSON"):
        _build(bad, tmp_path / "b")
    bad.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(StoreError, match=r"bad.jsonl:2: expected a JSON object, got list"):
        _build(bad, tmp_path / "c")


def test_csv(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("name,count,score,ok\nalpha,1,0.5,true\nbeta,2,1.5,false\n")
    store = _build(src, tmp_path / "s")
    assert store[1] == {"name": "beta", "count": 2, "score": 1.5, "ok": False}
    assert [c.describe() for c in store.columns] == [
        "str",
        "scalar[<i8]",
        "scalar[<f8]",
        "scalar[|b1]",
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    with pytest.raises(StoreError, match=r"cannot read"):
        _build(bad, tmp_path / "b")


def test_parquet_file_and_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    for part in range(2):
        table = pa.table(
            {
                "x": [part * 10 + i for i in range(3)],
                "emb": [[float(i)] * 4 for i in range(3)],
                "s": ["a", "b", "c"],
            }
        )
        pq.write_table(table, folder / f"part-{part}.parquet")
    assert detect(str(folder)) == "parquet"
    store = _build(folder, tmp_path / "s")
    assert store.get_columns(np.arange(6))["x"].tolist() == [0, 1, 2, 10, 11, 12]
    assert store[4]["emb"].dtype == np.float64 and store[4]["emb"].tolist() == [1.0] * 4
    assert len(_build(folder / "part-1.parquet", tmp_path / "one")) == 3
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(StoreError, match=r"cannot read Parquet"):
        ingest(tmp_path / "junk.parquet")


def test_npy_and_npz(tmp_path):
    images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    np.save(tmp_path / "pixels.npy", images)
    store = _build(tmp_path / "pixels.npy", tmp_path / "a")
    np.testing.assert_array_equal(store.get_columns(np.arange(5))["pixels"], images)
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(5, dtype=np.int32))
    store = _build(tmp_path / "d.npz", tmp_path / "b")
    cols = store.get_columns(np.array([4, 0]))
    np.testing.assert_array_equal(cols["x"], images[[4, 0]])
    assert cols["y"].dtype == np.int32 and cols["y"].tolist() == [4, 0]
    np.savez(tmp_path / "uneven.npz", x=np.zeros(3), y=np.zeros(4))
    with pytest.raises(StoreError, match=r"one shared first axis"):
        ingest(tmp_path / "uneven.npz")
    (tmp_path / "junk.npy").write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"cannot read .*junk.npy"):
        ingest(tmp_path / "junk.npy")


def _tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars(tmp_path):
    folder = tmp_path / "wds"
    folder.mkdir()
    _tar(
        folder / "000.tar",
        {"a/s0.jpg": b"J0", "a/s0.cls": b"3", "a/s1.jpg": b"J1", "a/s1.cls": b"4"},
    )
    _tar(folder / "001.tar", {"s2.jpg": b"J2", "s2.cls": b"5"})
    assert detect(str(folder)) == "webdataset"
    store = _build(folder, tmp_path / "s")
    assert [store[i] for i in range(3)] == [
        {"__key__": "a/s0", "jpg": b"J0", "cls": b"3"},
        {"__key__": "a/s1", "jpg": b"J1", "cls": b"4"},
        {"__key__": "s2", "jpg": b"J2", "cls": b"5"},
    ]
    _tar(tmp_path / "ragged.tar", {"s0.jpg": b"J0", "s0.cls": b"3", "s1.jpg": b"J1"})
    with pytest.raises(StoreError, match=r"record 1 has columns \['__key__', 'jpg'\]"):
        _build(tmp_path / "ragged.tar", tmp_path / "r")
    (tmp_path / "broken.tar").write_bytes(b"\x00" * 10 + b"not a tar")
    with pytest.raises(StoreError, match=r"cannot read tar"):
        _build(tmp_path / "broken.tar", tmp_path / "b")


def test_unknown_inputs(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        ingest(tmp_path / "missing.csv")
    (tmp_path / "data.xyz").write_text("?")
    with pytest.raises(StoreError, match="cannot tell the format"):
        ingest(tmp_path / "data.xyz")
    with pytest.raises(StoreError, match="unknown input format"):
        ingest(tmp_path / "data.xyz", "excel")


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.integers(0, 50), min_size=0, max_size=300),
    part_bytes=st.integers(1, 2000),
    newline_at_end=st.booleans(),
)
def test_line_ranges_cover_the_file_in_whole_lines_and_shrink_at_the_end(
    tmp_path_factory, lines, part_bytes, newline_at_end
):
    path = tmp_path_factory.mktemp("ranges") / "d.jsonl"
    raw = b"\n".join(b"x" * n for n in lines) + (b"\n" if newline_at_end else b"")
    path.write_bytes(raw)
    ranges = list(line_ranges(str(path), part_bytes))
    assert b"".join(raw[a : a + n] for a, n, _ in ranges) == raw  # in order, nothing twice
    assert all(a + n == b for (a, n, _), (b, _, _) in itertools.pairwise(ranges))
    assert all(raw[a + n - 1 : a + n] == b"\n" for a, n, _ in ranges[:-1])  # whole lines
    assert [first for _, _, first in ranges] == [raw[:a].count(b"\n") + 1 for a, _, _ in ranges]
    longest = max(lines, default=0) + 1
    # a full part until the end nears, then 1/8 of what is left, down to 1/8 of a part
    # (each extended to the end of the line it stops in)
    for a, n, _ in ranges:
        assert n <= _ingest._taper(len(raw) - a, part_bytes) + longest
    for left in (0, 1, 7, 8 * part_bytes - 1, 8 * part_bytes, 100 * part_bytes):
        size = _ingest._taper(left, part_bytes)
        assert size == part_bytes if left >= 8 * part_bytes else 1 <= size <= part_bytes


@pytest.mark.parametrize("count", [1, 7, 64, 65, 600])
def test_image_parts_take_every_file_once_in_order_and_the_last_are_small(tmp_path, count):
    root = tmp_path / "images"
    for i in range(count):
        path = root / f"c{i % 3}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded when the images are stored as they are")
    source = ingest(root)
    expected = [r["path"] for r in ingest(root).records]
    parts = [[r["path"] for r in part()] for part in source.parts]
    assert [p for part in parts for p in part] == expected
    assert max(map(len, parts)) <= _ingest._PART_IMAGES
    assert len(parts[-1]) <= max(1, _ingest._PART_IMAGES // 8)
