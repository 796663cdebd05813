"""Sources: from_arrays and from_dataset in the Source protocol's terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epochal
from epochal.sources import Source


def test_from_arrays_records_and_batches(tmp_path):
    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(50, 4))
    images[:] = np.arange(200).reshape(50, 4)
    images.flush()
    memmap = np.load(tmp_path / "x.npy", mmap_mode="r")
    source = epochal.from_arrays(image=memmap, label=np.arange(50))
    assert isinstance(source, Source) and len(source) == 50
    assert source[3]["image"].tolist() == [12, 13, 14, 15] and source[3]["label"] == 3
    indices = np.array([5, 1, 5, 49])
    columns = source.get_columns(indices)
    assert columns["image"].shape == (4, 4) and columns["label"].tolist() == [5, 1, 5, 49]
    records = source.get_many(indices)
    assert [int(r["label"]) for r in records] == [5, 1, 5, 49]
    assert source.deterministic


def test_fingerprint_changes_with_the_data():
    a = epochal.from_arrays(x=np.arange(100))
    assert a.fingerprint == epochal.from_arrays(x=np.arange(100)).fingerprint
    assert a.fingerprint != epochal.from_arrays(x=np.arange(1, 101)).fingerprint
    assert a.fingerprint != epochal.from_arrays(x=np.arange(101)).fingerprint
    assert a.fingerprint != epochal.from_arrays(y=np.arange(100)).fingerprint
    assert a.fingerprint != epochal.from_arrays(x=np.arange(100, dtype=np.int32)).fingerprint


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({}, "at least one column"),
        ({"x": np.arange(3), "y": np.arange(4)}, "different numbers of records"),
        ({"x": np.float32(1.0)}, "scalar"),
        ({"x": np.zeros((0, 3))}, "zero records"),
    ],
)
def test_from_arrays_bad_input(columns, message):
    with pytest.raises(epochal.Error, match=message):
        epochal.from_arrays(**columns)


def test_from_arrays_index_out_of_range():
    with pytest.raises(IndexError, match="record index 3 is out of range"):
        epochal.from_arrays(x=np.arange(3))[3]


def test_from_dataset():
    dataset = torch.utils.data.TensorDataset(torch.arange(6))
    source = epochal.from_dataset(dataset)
    assert len(source) == 6 and not source.deterministic and not source.batched
    assert source.get_many(np.array([4, 0])) == [(torch.tensor(4),), (torch.tensor(0),)]
    assert (
        source.fingerprint
        == epochal.from_dataset(torch.utils.data.TensorDataset(torch.arange(6))).fingerprint
    )
    with pytest.raises(epochal.Error, match="__len__ and __getitem__"):
        epochal.from_dataset(object())
    with pytest.raises(epochal.Error, match="empty"):
        epochal.from_dataset([])
