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
    # ragged numeric lists stay one array per record
    assert [len(t) for t in batch["tokens"]] == [1 + int(i) % 3 for i in batch["id"]]


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
