"""Hugging Face ``datasets.Dataset`` as a Source: whole batches through one columnar read.

``ds[indices]`` on an Arrow-formatted view is one ``take`` per column; numbers and lists of
numbers become numpy arrays without per-row Python work (datasets' own numpy format
converts list columns row by row). Reading record by record instead costs a Python dict
per row. ``datasets`` is never imported here: a caller that holds a Dataset has
imported it already.

Variable-length lists of numbers (a column whose lists differ in length anywhere in the
dataset) are one numpy array per record; in batches read without a transform they are a
list of tensors, one per record, or with ``pad`` one padded ``(batch, longest)`` tensor
plus a ``<name>_length`` column. Whether a column counts as variable-length is decided once
for the whole dataset, so its batches have one type whatever lengths a batch happens to
hold.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from epochal._errors import Error, OutOfRangeError

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


def _is_numeric_list(type_: Any) -> bool:
    import pyarrow as pa

    listlike = (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
    )
    return bool(listlike and _numeric(type_.value_type))


def _ragged_columns(table: Any) -> set[str]:
    """The columns of ``table`` whose lists of numbers differ in length (nulls aside)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ragged = set()
    for name in table.column_names:
        type_ = table.schema.field(name).type
        if _is_numeric_list(type_) and not pa.types.is_fixed_size_list(type_):
            extremes = pc.min_max(pc.list_value_length(table.column(name))).as_py()
            if extremes["min"] is not None and extremes["min"] != extremes["max"]:
                ragged.add(name)
    return ragged


def _pad_rows(rows: Any, value: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of numbers (a list of 1-D arrays, or a 2-D array) as one ``(rows, longest)``
    array padded with ``value`` after each row's end, and the rows' lengths."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return rows, np.full(len(rows), rows.shape[1], dtype=np.int64)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.concatenate(rows) if len(rows) else np.empty(0)
    out = np.full((len(rows), int(lengths.max(initial=0))), value, dtype=flat.dtype)
    starts = np.cumsum(lengths) - lengths
    out[
        np.repeat(np.arange(len(rows)), lengths), np.arange(len(flat)) - np.repeat(starts, lengths)
    ] = flat
    return out, lengths


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

    ``get_columns(indices)`` is one ``ds[indices]`` call; numbers and lists of numbers of
    one length come as arrays (tensors in batches), strings as lists. Lists of numbers
    whose lengths differ in the dataset are one 1-D array per record: a list of arrays in
    ``get_columns`` (a list of tensors in the Loader's batches), or, for the columns
    ``pad`` names, one ``(batch, longest)`` array filled with the pad value after each
    row's end plus an int64 ``<name>_length`` column. Records (``source[i]`` and what a
    transform receives) are never padded. The fingerprint is the dataset's own (it changes
    with every transformation ``datasets`` applies), so a state taken on another dataset of
    the same length is refused.

    Args:
        dataset: a map-style ``datasets.Dataset``.
        pad: a number pads every variable-length numeric list column with it; a mapping
            pads the columns it names (numeric list columns, e.g.
            ``{"input_ids": pad_id, "labels": -100}``); None pads nothing.

    Raises:
        epochal.Error: ``pad`` names a column that is not a list of numbers, or a
            ``<name>_length`` column already exists.
    """

    deterministic = True  # reading a row draws from no global RNG

    def __init__(self, dataset: Any, *, pad: float | Mapping[str, float] | None = None) -> None:
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
        empty = self._arrow[:0]  # the column types, no rows read
        table = getattr(getattr(dataset, "data", None), "table", None)
        # decided over the whole dataset (an unknown layout reads it once), so a batch's
        # type does not depend on which rows it holds
        self._ragged = _ragged_columns(table if table is not None else self._arrow[:])
        self._ragged &= set(dataset.column_names)
        self._pad = self._pad_values(pad, empty.schema)

    def _pad_values(self, pad: float | Mapping[str, float] | None, schema: Any) -> dict[str, float]:
        """The pad value of each column to pad, checked against the dataset's ``schema``."""
        if pad is None:
            return {}
        if not isinstance(pad, Mapping):
            pad = {name: pad for name in self.dataset.column_names if name in self._ragged}
        lists = [n for n in schema.names if _is_numeric_list(schema.field(n).type)]
        for name in pad:
            if name not in lists:
                raise Error(
                    f"pad names column {name!r}, which is not a list of numbers; columns "
                    f"that can be padded: {lists}"
                )
            if f"{name}_length" in schema.names:
                raise Error(
                    f"padding {name!r} adds a column {name}_length, which the dataset "
                    f"already has; rename it first (ds.rename_column)"
                )
        return dict(pad)

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
        """The records ``indices`` as columns (first axis = the batch), padded as
        ``pad`` asks."""
        columns = self._columns(indices)
        if not self._pad:
            return columns
        out: dict[str, Any] = {}
        for name, column in columns.items():
            if name in self._pad:
                out[name], out[f"{name}_length"] = _pad_rows(column, self._pad[name])
            else:
                out[name] = column
        return out

    def _columns(self, indices: np.ndarray) -> dict[str, Any]:
        columns = self._read(np.asarray(indices, dtype=np.int64))
        for name in self._ragged:  # a list even when this batch's lengths agree
            if isinstance(columns[name], np.ndarray):
                columns[name] = list(columns[name])
        return columns

    def _read(self, keys: np.ndarray) -> dict[str, Any]:
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
            # a ragged column may hold one length per record batch: never concatenated
            if name in self._ragged or len(views) < len(self._views):
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
        columns = self._columns(indices)  # records are never padded
        return [{name: col[j] for name, col in columns.items()} for j in range(len(indices))]

    @property
    def fingerprint(self) -> str:
        """The dataset's fingerprint (``datasets`` updates it on every transformation)."""
        own = getattr(self.dataset, "_fingerprint", None)
        return f"hf:{own}:{self._n}" if own else f"hf:unknown:{self._n}"

    def __repr__(self) -> str:
        return f"HFSource(n={self._n}, columns={list(self.dataset.column_names)})"


def hf_list_columns(dataset: Any) -> frozenset[str]:
    """The dataset's columns of numeric lists whose lengths differ: store list columns."""
    table = getattr(getattr(dataset, "data", None), "table", None)
    if table is None:
        table = dataset.with_format("arrow")[:]
    return frozenset(_ragged_columns(table) & set(dataset.column_names))


def hf_records(dataset: Any, *, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Rows of a ``datasets.Dataset`` as store records: numeric lists as numpy arrays,
    ``Image`` columns as the encoded file bytes (never decoded: a JPEG stays the same
    JPEG, read back with ``epochal.decode_image``)."""
    from epochal.store._ingest import _row

    datasets = sys.modules["datasets"]
    images = [n for n, f in dataset.features.items() if isinstance(f, datasets.Image)]
    position = 0
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        for row in table.to_pylist():
            for name in images:
                row[name] = _image_bytes(row[name], name, position)
            position += 1
            yield _row(row)


def _image_bytes(value: dict[str, Any] | None, name: str, position: int) -> bytes | None:
    """The encoded bytes of one ``Image`` value: its stored ``bytes``, or the file at its
    ``path`` when the dataset only refers to the file (as ``imagefolder`` loads do)."""
    from epochal.store._errors import StoreError

    if value is None:
        return None
    if value.get("bytes") is not None:
        return bytes(value["bytes"])
    path = value.get("path")
    if not path:
        raise StoreError(f"row {position}: image column {name!r} has neither bytes nor a path")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise StoreError(
            f"row {position}: image column {name!r} refers to the file {path!r}, which "
            f"cannot be read ({err}); write the dataset where its image files are"
        ) from err
