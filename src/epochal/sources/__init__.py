"""Sources: records by index. See :class:`Source` for the protocol."""

from __future__ import annotations

from epochal.sources._arrays import ArraySource, from_arrays
from epochal.sources._dataset import DatasetSource, from_dataset
from epochal.sources._protocol import Record, Source, get_many

__all__ = [
    "ArraySource",
    "DatasetSource",
    "Record",
    "Source",
    "from_arrays",
    "from_dataset",
    "get_many",
]
