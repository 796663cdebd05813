"""Batches own their memory (issue #18): a batch the caller keeps is never overwritten by a
later batch, never aliases the source, and writing into it changes nothing else. The fast
path reuses nothing that a batch can see, whatever the source returns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import epochal


class _IndexSource:
    """A columnar source that hands back the very index array it is given."""

    deterministic = True
    fast_gather = True

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"i": int(index)}

    def get_columns(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {"i": indices}


def _spans(batch: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    return [
        (t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
        for t in batch.values()
        if isinstance(t, torch.Tensor) and t.numel()
    ]


def _disjoint(spans: list[tuple[int, int]]) -> bool:
    spans = sorted(spans)
    return all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def _source(tmp_path, kind: str):
    n = 1000
    images = np.arange(n * 12, dtype=np.uint8).reshape(n, 12)
    labels = np.arange(n, dtype=np.int64) * 3
    if kind == "arrays":
        return epochal.from_arrays(image=images, label=labels), images, labels
    if kind == "memmap":
        mapped = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="w+", shape=(n, 12))
        mapped[:] = images
        mapped.flush()
        return epochal.from_arrays(image=mapped, label=labels), images, labels
    records = ({"image": images[i], "label": int(labels[i])} for i in range(n))
    epochal.write(records, tmp_path / "store", shard_size=3000)
    return epochal.open(tmp_path / "store"), images, labels


@pytest.mark.parametrize("kind", ["arrays", "memmap", "store"])
def test_kept_batches_are_never_overwritten(tmp_path, kind):
    source, images, labels = _source(tmp_path, kind)
    loader = epochal.Loader(source, 64, seed=3, with_index=True)
    kept = list(loader)  # every batch of epoch 0, kept while the loader goes on
    again = list(loader)  # epoch 1 runs with the first epoch's batches still alive
    assert len(kept) == len(again) == 16
    for batch in kept + again:
        index = batch["_index"].numpy()
        np.testing.assert_array_equal(batch["image"].numpy(), images[index])
        np.testing.assert_array_equal(batch["label"].numpy(), labels[index])
    spans = [span for batch in kept + again for span in _spans(batch)]
    assert _disjoint(spans)
    if kind == "arrays":  # nor does any batch alias the source's own arrays
        columns = [(a.ctypes.data, a.ctypes.data + a.nbytes) for a in (images, labels)]
        assert _disjoint(spans + columns)
    kept[0]["image"].fill_(0)  # the caller's batch is its own: writing touches nothing else
    kept[0]["label"].fill_(-1)
    index = kept[1]["_index"].numpy()
    np.testing.assert_array_equal(kept[1]["image"].numpy(), images[index])
    fresh = source.get_columns(kept[0]["_index"].numpy())
    np.testing.assert_array_equal(fresh["label"], labels[kept[0]["_index"].numpy()])


def test_a_source_returning_the_loaders_own_indices_gets_a_fresh_array_each_batch():
    n = 5000
    loader = epochal.Loader(_IndexSource(n), 100, seed=0)
    kept = list(loader)
    order = epochal.make_order(n, seed=0, epoch=0).index(np.arange(n))
    for k, batch in enumerate(kept):
        assert batch["i"].tolist() == order[k * 100 : (k + 1) * 100].tolist()
    assert _disjoint([span for batch in kept for span in _spans(batch)])
    list(loader)  # the next epoch computes its order into new memory
    for k, batch in enumerate(kept):
        assert batch["i"].tolist() == order[k * 100 : (k + 1) * 100].tolist()
