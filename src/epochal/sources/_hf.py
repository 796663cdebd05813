"""Hugging Face ``datasets.Dataset`` as a Source: whole batches through one columnar read.

``ds[indices]`` on an Arrow-formatted view is one ``take`` per column; numbers and lists of
numbers become numpy arrays without per-row Python work (datasets' own numpy format
converts list columns row by row). Reading record by record instead costs a Python dict
per row. ``datasets`` is never imported here: a caller that holds a Dataset has
imported it already.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from epochal._errors import OutOfRangeError

__all__ = ["HFSource", "hf_records", "is_hf_dataset"]


def is_hf_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a map-style ``datasets.Dataset`` (without importing datasets)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(obj, datasets.Dataset)


def _column(values: Any) -> Any:
    """A numpy-format column as the Loader collates it: numeric arrays stay arrays."""
    if isinstance(values, np.ndarray):
        if values.dtype == object and len(values) and isinstance(values[0], np.ndarray):
            try:  # lists of one length per batch: one array
                return np.stack(list(values))
            except ValueError:
                return values  # ragged: a list of arrays
        return values
    if isinstance(values, list) and values and all(isinstance(v, np.ndarray) for v in values):
        shapes = {v.shape for v in values}
        return np.stack(values) if len(shapes) == 1 else values
    return values


def _numeric(type_: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(type_) or pa.types.is_floating(type_))


def _arrow_column(column: Any) -> Any:
    """One column of an Arrow batch without per-row Python work where the type allows:
    numbers as an array, lists of numbers as one (rows, length) array (a list of arrays
    when the lengths differ), anything else as Python values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    type_ = array.type
    if array.null_count == 0 and (_numeric(type_) or pa.types.is_boolean(type_)):
        return array.to_numpy(zero_copy_only=False)
    listlike = (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
    )
    if listlike and array.null_count == 0 and _numeric(type_.value_type):
        values = array.flatten()
        if values.null_count == 0:
            flat = values.to_numpy(zero_copy_only=False)
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths == lengths[0]).all():
                return flat.reshape(len(array), int(lengths[0]))
            return np.split(flat, np.cumsum(lengths)[:-1])
    return array.to_pylist()


def _numpy_view(array: Any) -> np.ndarray | None:
    """A zero-copy numpy view of an Arrow column of numbers or of equal-length lists of
    numbers (rows first), or None when its type or nulls need a conversion."""
    import pyarrow as pa

    type_ = array.type
    try:
        if array.null_count == 0 and _numeric(type_):
            return array.to_numpy(zero_copy_only=True)
        if pa.types.is_fixed_size_list(type_) and _numeric(type_.value_type):
            values = array.flatten()
            if array.null_count == 0 and values.null_count == 0:
                return values.to_numpy(zero_copy_only=True).reshape(len(array), type_.list_size)
        if (pa.types.is_list(type_) or pa.types.is_large_list(type_)) and _numeric(
            type_.value_type
        ):
            lengths = np.diff(array.offsets.to_numpy())
            values = array.flatten()
            if (
                array.null_count == 0
                and values.null_count == 0
                and len(lengths)
                and (lengths == lengths[0]).all()
            ):
                return values.to_numpy(zero_copy_only=True).reshape(len(array), int(lengths[0]))
    except (pa.ArrowInvalid, ValueError):
        return None
    return None


class HFSource:
    """A ``datasets.Dataset`` read through its numpy format.

    ``get_columns(indices)`` is one ``ds[indices]`` call; numeric list columns come as
    arrays (tensors in batches), strings as lists. The fingerprint is the dataset's own
    (it changes with every transformation ``datasets`` applies), so a state taken on
    another dataset of the same length is refused.
    """

    deterministic = True  # reading a row draws from no global RNG

    def __init__(self, dataset: Any) -> None:
        from datasets.features.features import require_decoding

        self.dataset = dataset
        self._numpy = dataset.with_format("numpy")
        self._arrow = dataset.with_format("arrow")
        # features datasets decodes when formatting (Image, Audio) keep its numpy format;
        # plain columns are converted from Arrow here, without its per-row list handling
        self._decoded = any(require_decoding(f) for f in dataset.features.values())
        self._n = len(dataset)
        self._batches: list[Any] | None = None  # the Arrow record batches, read lazily
        self._offsets: np.ndarray | None = None
        self._views: list[dict[str, np.ndarray | None]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the views are over this process's buffers: a spawned worker builds its own
        return {**self.__dict__, "_batches": None, "_offsets": None, "_views": None}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self._n:
            raise OutOfRangeError(
                f"record index {index} is out of range for a source of {self._n} records"
            )
        return dict(self._numpy[index])

    def get_columns(self, indices: np.ndarray) -> dict[str, Any]:
        """The records ``indices`` as columns (first axis = the batch)."""
        keys = np.asarray(indices, dtype=np.int64)
        if self._decoded:
            rows = self._numpy[keys]
            return {name: _column(values) for name, values in rows.items()}
        located = self._locate(keys)
        if located is None:  # a layout this fast path does not know: datasets' own read
            table = self._arrow[keys]
            return {name: _arrow_column(table.column(name)) for name in table.column_names}
        which, local = located
        assert self._views is not None
        out: dict[str, Any] = {}
        rest = []
        for name in self.dataset.column_names:
            views = [view for v in self._views if (view := v[name]) is not None]
            if len(views) < len(self._views):
                rest.append(name)
            elif len(views) == 1:
                out[name] = views[0][local]
            else:
                column = np.empty((len(keys), *views[0].shape[1:]), dtype=views[0].dtype)
                for b in np.unique(which):
                    mask = which == b
                    column[mask] = views[b][local[mask]]
                out[name] = column
        if rest:
            table = self._take(which, local, rest)
            out.update({name: _arrow_column(table.column(name)) for name in rest})
        return {name: out[name] for name in self.dataset.column_names}

    def _locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(record batch, row in it) of each key of the dataset's Arrow table, through its
        indices mapping when it has one (after ``shuffle``/``select``); None for a layout
        this fast path does not know."""
        import pyarrow as pa

        table = getattr(getattr(self.dataset, "data", None), "table", None)
        if not isinstance(table, pa.Table) or table.column_names != self.dataset.column_names:
            return None
        mapping = getattr(self.dataset, "_indices", None)
        if mapping is not None:
            keys = np.asarray(mapping.column(0).take(pa.array(keys)), dtype=np.int64)
        if self._batches is None:
            # numpy views of the columns' buffers, where the type allows (numbers, lists of
            # numbers of one length): a batch is then a numpy gather, as from a store
            self._batches = [b for b in table.to_batches() if b.num_rows]
            self._offsets = np.cumsum([0] + [b.num_rows for b in self._batches])
            self._views = [
                {name: _numpy_view(b.column(name)) for name in table.column_names}
                for b in self._batches
            ]
        assert self._offsets is not None
        which = np.searchsorted(self._offsets, keys, side="right") - 1
        return which, keys - self._offsets[which]

    def _take(self, which: np.ndarray, local: np.ndarray, names: list[str]) -> Any:
        """The located rows' ``names`` columns as an Arrow table: one ``take`` per record
        batch (datasets' own ``ds[keys]`` slices one row at a time)."""
        import pyarrow as pa

        assert self._batches is not None
        order = np.argsort(which, kind="stable")
        parts = []
        for b in np.unique(which):
            rows = local[order][which[order] == b]
            parts.append(self._batches[b].select(names).take(pa.array(rows)))
        gathered = pa.Table.from_batches(parts)
        return gathered.take(pa.array(np.argsort(order)))  # back to the order asked for

    def get_many(self, indices: np.ndarray) -> list[dict[str, Any]]:
        """The records ``indices``, read as columns in one call and split into dicts."""
        columns = self.get_columns(indices)
        return [{name: col[j] for name, col in columns.items()} for j in range(len(indices))]

    @property
    def fingerprint(self) -> str:
        """The dataset's fingerprint (``datasets`` updates it on every transformation)."""
        own = getattr(self.dataset, "_fingerprint", None)
        return f"hf:{own}:{self._n}" if own else f"hf:unknown:{self._n}"

    def __repr__(self) -> str:
        return f"HFSource(n={self._n}, columns={list(self.dataset.column_names)})"


def hf_records(dataset: Any, *, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Rows of a ``datasets.Dataset`` as store records: numeric lists as numpy arrays."""
    from epochal.store._ingest import _row

    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        for row in table.to_pylist():
            yield _row(row)
