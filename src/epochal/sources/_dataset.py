"""``from_dataset``: any map-style torch Dataset as a Source."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from epochal._errors import Error, OutOfRangeError
from epochal.sources._hf import HFSource, is_hf_dataset

__all__ = ["DatasetSource", "from_dataset"]


class DatasetSource:
    """A map-style ``torch.utils.data.Dataset`` (anything with ``__len__``/``__getitem__``).

    Uses the dataset's ``__getitems__`` for batches when it has one. The dataset is not
    assumed deterministic: it may call ``np.random`` in ``__getitem__`` (P6), so the Loader
    seeds the global RNGs per record around each read.
    """

    deterministic = False

    def __init__(self, dataset: Any) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise Error(
                f"from_dataset() needs a map-style dataset with __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        n = len(dataset)
        if n < 1:
            raise Error(
                f"from_dataset() got an empty dataset ({type(dataset).__name__} has length 0)"
            )
        self.dataset = dataset
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if not 0 <= index < self._n:
            raise OutOfRangeError(
                f"record index {index} is out of range for a source of {self._n} records"
            )
        return self.dataset[index]

    @property
    def batched(self) -> bool:
        """Whether the dataset has its own ``__getitems__`` batch path."""
        return callable(getattr(self.dataset, "__getitems__", None))

    def get_many(self, indices: np.ndarray) -> list[Any]:
        """The records ``indices``, through ``__getitems__`` when the dataset has it."""
        index_list = [int(i) for i in indices]
        if self.batched:
            return list(self.dataset.__getitems__(index_list))
        return [self.dataset[i] for i in index_list]

    @property
    def fingerprint(self) -> str:
        """The dataset's own ``fingerprint`` if it has one, else its type and length."""
        own = getattr(self.dataset, "fingerprint", None)
        if isinstance(own, str):
            return own
        kind = f"{type(self.dataset).__module__}.{type(self.dataset).__qualname__}:{self._n}"
        return hashlib.blake2b(kind.encode(), digest_size=8).hexdigest()

    def __repr__(self) -> str:
        return f"DatasetSource({type(self.dataset).__name__}, n={self._n})"


def from_dataset(
    dataset: Any, *, pad: float | Mapping[str, float] | None = None
) -> DatasetSource | HFSource:
    """A Source over any map-style torch Dataset, or a Hugging Face ``datasets.Dataset``.

    A ``datasets.Dataset`` gets a columnar fast path: each batch is one ``ds[indices]``
    read in numpy format, numeric list columns come as tensors, and the fingerprint is the
    dataset's own (see :class:`epochal.sources._hf.HFSource`). Its lists of numbers whose
    lengths differ are one array per record, a list of tensors per batch, or with ``pad``
    a padded ``(batch, longest)`` tensor plus a ``<name>_length`` column.

    Args:
        dataset: an object with ``__len__`` and ``__getitem__`` (and optionally
            ``__getitems__`` for batches).
        pad: Hugging Face datasets only: a number pads every variable-length list column
            of numbers in batches read without a transform, a mapping
            (``{"input_ids": pad_id, "labels": -100}``) the columns it names.

    Returns:
        A Source the Loader can shuffle, shard and resume exactly.
    """
    if is_hf_dataset(dataset):
        return HFSource(dataset, pad=pad)
    if pad is not None:
        raise Error(
            f"pad={pad!r} pads the list columns of a Hugging Face datasets.Dataset; "
            f"{type(dataset).__name__} is not one (pad in its collate_fn instead)"
        )
    return DatasetSource(dataset)
