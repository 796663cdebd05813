"""Sources: records by index. See :class:`Source` for the protocol."""

from __future__ import annotations

from epochal.sources._arrays import ArraySource, from_arrays
from epochal.sources._dataset import DatasetSource, from_dataset
from epochal.sources._protocol import Record, Source, get_many
from epochal.sources._views import ConcatSource, SubsetSource, concat, split, subset

__all__ = [
    "ArraySource",
    "ConcatSource",
    "DatasetSource",
    "Record",
    "Source",
    "SubsetSource",
    "concat",
    "from_arrays",
    "from_dataset",
    "get_many",
    "split",
    "subset",
]
