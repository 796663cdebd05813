"""Hugging Face datasets as a Source: the columnar path, numeric lists as tensors, the
dataset's own fingerprint, and epochal.write of a Dataset. Datasets are built from
in-memory dicts: nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets", reason="needs Hugging Face datasets (test extra)")

import epochal  # noqa: E402
from epochal import Loader, StateError  # noqa: E402


def _hf(n: int = 50, offset: int = 0):
    return datasets.Dataset.from_dict(
        {
            "id": list(range(offset, offset + n)),
            "vec": [[float(i), float(i) / 2, -1.0] for i in range(n)],
            "tokens": [[i] * (1 + i % 3) for i in range(n)],
            "text": [f"row {i}" for i in range(n)],
        }
    )


def test_hf_dataset_gets_the_columnar_source():
    source = epochal.from_dataset(_hf())
    assert callable(getattr(source, "get_columns", None)) and source.deterministic
    loader = Loader(source, 8, seed=1)
    assert loader._fetcher.columnar  # a whole batch per ds[indices] read
    batch = next(iter(loader))
    assert batch["id"].dtype == torch.int64 and batch["id"].shape == (8,)
    assert batch["vec"].is_floating_point() and batch["vec"].shape == (8, 3)
    assert torch.equal(batch["vec"][:, 0], batch["id"].to(batch["vec"].dtype))
    assert batch["text"] == [f"row {int(i)}" for i in batch["id"]]
    # variable-length numeric lists: one tensor per record
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.int64 for t in batch["tokens"])
    assert [t.tolist() for t in batch["tokens"]] == [
        [int(i)] * (1 + int(i) % 3) for i in batch["id"]
    ]


def test_every_record_once_and_transforms_see_numpy_records():
    seen = []

    def transform(record, rng):
        assert isinstance(record["vec"], np.ndarray) and record["vec"].shape == (3,)
        return {"id": record["id"]}

    for batch in Loader(epochal.from_dataset(_hf(23)), 5, seed=2, transform=transform):
        seen += batch["id"].tolist()
    assert sorted(seen) == list(range(23))


def test_fingerprint_is_the_datasets_own():
    a, b = epochal.from_dataset(_hf(50)), epochal.from_dataset(_hf(50, offset=1000))
    assert a.fingerprint != b.fingerprint  # same length, other data
    assert epochal.from_dataset(_hf(50)).fingerprint == a.fingerprint  # same data, same print
    state = Loader(a, 5).state_dict()
    with pytest.raises(StateError, match="fingerprint"):
        Loader(b, 5).load_state_dict(state)


def test_write_of_a_dataset_round_trips(tmp_path):
    ds = _hf(30).select_columns(["id", "vec", "text"]).shuffle(seed=0)  # an indices mapping
    epochal.write(ds, tmp_path / "store")
    store = epochal.open(tmp_path / "store")
    assert len(store) == 30
    for i in (0, 7, 29):
        record, row = store[i], ds[i]
        assert int(record["id"]) == row["id"] and record["text"] == row["text"]
        assert isinstance(record["vec"], np.ndarray)
        np.testing.assert_array_equal(record["vec"], np.asarray(row["vec"]))


@pytest.mark.parametrize("view", ["plain", "shuffled", "selected"])
def test_columns_equal_datasets_own_numpy_format(view):
    ds = _hf(40).select_columns(["id", "vec"])
    ds = {"plain": ds, "shuffled": ds.shuffle(seed=3), "selected": ds.select([5, 1, 30, 2])}[view]
    keys = np.arange(len(ds))[::-1].copy()
    mine = epochal.from_dataset(ds).get_columns(keys)
    theirs = ds.with_format("numpy")[keys]
    for name in ("id", "vec"):
        np.testing.assert_array_equal(mine[name], theirs[name])


def test_variable_length_lists_are_arrays_per_record_and_a_list_in_every_batch():
    source = epochal.from_dataset(_hf(12))
    record = source[4]
    assert isinstance(record["tokens"], np.ndarray) and record["tokens"].tolist() == [4, 4]
    # a batch whose rows happen to share a length is still a list: the column's type is
    # decided for the whole dataset, not per batch
    columns = source.get_columns(np.array([0, 3, 6]))
    assert isinstance(columns["tokens"], list) and [a.tolist() for a in columns["tokens"]] == [
        [0],
        [3],
        [6],
    ]
    assert isinstance(columns["vec"], np.ndarray) and columns["vec"].shape == (3, 3)

    def transform(record, rng):
        assert isinstance(record["tokens"], np.ndarray) and record["tokens"].ndim == 1
        return {"n": len(record["tokens"])}

    ns = [n for b in Loader(source, 4, transform=transform) for n in b["n"].tolist()]
    assert sorted(ns) == sorted(1 + i % 3 for i in range(12))


def test_lengths_that_differ_between_arrow_record_batches_are_variable_length():
    # each part has one length, so each Arrow record batch alone looks fixed-length
    parts = [datasets.Dataset.from_dict({"t": [[k] * k for _ in range(4)]}) for k in (2, 3)]
    source = epochal.from_dataset(datasets.concatenate_datasets(parts))
    assert len(source.dataset.data.table.to_batches()) == 2
    batch = source.get_columns(np.array([0, 5, 1]))
    assert [a.tolist() for a in batch["t"]] == [[2, 2], [3, 3, 3], [2, 2]]


def test_pad_gives_one_padded_tensor_and_the_lengths():
    ds = _hf(20).add_column("labels", [[i] * (i % 4) for i in range(20)])
    loader = Loader(epochal.from_dataset(ds, pad={"tokens": 0, "labels": -100}), 6, seed=3)
    for batch in loader:
        ids = batch["id"].tolist()
        lengths = [1 + i % 3 for i in ids]
        assert batch["tokens_length"].tolist() == lengths
        assert batch["tokens"].shape == (len(ids), max(lengths))
        assert batch["tokens"].tolist() == [
            [i] * n + [0] * (max(lengths) - n) for i, n in zip(ids, lengths)
        ]
        width = max(i % 4 for i in ids)
        assert batch["labels"].tolist() == [[i] * (i % 4) + [-100] * (width - i % 4) for i in ids]
        assert batch["vec"].shape == (len(ids), 3) and "vec_length" not in batch
    # a number pads every variable-length column; records are never padded
    padded = epochal.from_dataset(ds, pad=0)
    assert set(padded.get_columns(np.arange(3))) == {
        *ds.column_names,
        "tokens_length",
        "labels_length",
    }
    assert padded[2]["tokens"].tolist() == [2, 2, 2]


def test_pad_refuses_what_it_cannot_pad():
    with pytest.raises(
        epochal.Error, match=r"'text', which is not a list of numbers.*'vec', 'tokens'"
    ):
        epochal.from_dataset(_hf(), pad={"text": 0})
    clash = _hf().add_column("tokens_length", [0] * 50)
    with pytest.raises(epochal.Error, match="tokens_length, which the dataset already has"):
        epochal.from_dataset(clash, pad={"tokens": 0})
    with pytest.raises(epochal.Error, match="not one"):
        epochal.from_dataset([1, 2, 3], pad=0)


def test_ragged_arrays_from_a_transform_are_a_list_when_1_d_and_a_clear_error_otherwise():
    ds = _hf(9)
    # in order, every batch of 3 holds lengths 1, 2 and 3: one tensor per record
    loader = Loader(
        epochal.from_dataset(ds), 3, shuffle=False, transform=lambda r, rng: {"t": r["tokens"]}
    )
    batches = list(loader)
    assert all(isinstance(b["t"], list) and isinstance(b["t"][0], torch.Tensor) for b in batches)
    assert sorted(len(t) for b in batches for t in b["t"]) == sorted(len(t) for t in ds["tokens"])
    square = Loader(
        epochal.from_dataset(ds),
        3,
        transform=lambda r, rng: {"t": np.ones((len(r["tokens"]), 2))},
    )
    with pytest.raises(epochal.Error, match=r"column 't' has arrays of \d shapes.*pad_sequence"):
        list(square)


def test_write_keeps_image_features_encoded_and_decode_image_reads_them(tmp_path):
    pytest.importorskip("PIL", reason="image features need Pillow (test extra)")
    import io

    from PIL import Image

    def encoded(seed: int, fmt: str) -> bytes:
        pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        return buffer.getvalue()

    files = [encoded(k, "JPEG") for k in range(5)] + [encoded(5, "PNG")]
    (tmp_path / "on_disk.png").write_bytes(files[5])  # a row that only refers to its file
    images = [{"bytes": b, "path": None} for b in files[:5]]
    images.append({"bytes": None, "path": str(tmp_path / "on_disk.png")})
    features = datasets.Features({"image": datasets.Image(), "k": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": images, "k": list(range(6))}, features=features)
    ds = ds.shuffle(seed=1)
    epochal.write(ds, tmp_path / "store")

    store = epochal.open(tmp_path / "store")
    for i in range(6):
        record = store[i]
        assert record["image"] == files[int(record["k"])]  # the same file bytes, not pixels
        decoded = epochal.decode_image(record["image"])
        np.testing.assert_array_equal(decoded, np.asarray(ds[i]["image"].convert("RGB")))

    broken = datasets.Dataset.from_dict(
        {"image": [{"bytes": None, "path": str(tmp_path / "gone.png")}], "k": [0]},
        features=features,
    )
    with pytest.raises(epochal.Error, match=r"gone\.png"):
        epochal.write(broken, tmp_path / "broken")


def test_write_stores_variable_length_numeric_lists_as_list_columns(tmp_path):
    ds = _hf(20)  # "tokens" holds 1 to 3 ids per row; "vec" always 3 floats
    epochal.write(ds, tmp_path / "s")
    store = epochal.open(tmp_path / "s")
    kinds = {c.name: c.kind for c in store.manifest.columns}
    assert kinds["tokens"] == "list" and kinds["vec"] == "array"
    got = store.get_columns(np.arange(20))
    assert [list(t) for t in got["tokens"]] == ds["tokens"]
