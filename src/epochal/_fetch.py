"""Fetch: one whole batch from a batch request, in the DataLoader's worker processes.

:class:`Fetcher` is the "dataset" the Loader hands to ``torch.utils.data.DataLoader``: it
is only ever called with a whole :class:`~epochal._requests.Request` (an epoch and the
batch's record indices), reads the batch at once (``get_columns`` or ``get_many`` when
the source has them), runs the transform with each record's own generator (optionally
seeding the global RNGs around it) and collates. Workers hold no state between batches,
so any worker may build any batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from epochal._errors import Error
from epochal._requests import Request
from epochal.rng import GlobalRNGs, SampleRNGs, sample_seed
from epochal.sources._protocol import get_many, is_batched

__all__ = [
    "INDEX_KEY",
    "REPEAT_KEY",
    "Fetcher",
    "Transform",
    "collate",
    "identity",
    "send_small_by_value",
    "start_worker",
    "start_worker_then",
]

INDEX_KEY = "_index"  # with_index=True: the record index of each sample
REPEAT_KEY = "_repeat"  # with_index=True: True for the padded repeats of an epoch's last batch

Transform = Callable[[Any, np.random.Generator], Any]


def _to_tensor(value: Any) -> Any:
    """A numeric numpy column becomes a tensor that owns its memory, a list of numeric
    arrays a list of tensors; anything else stays."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if not value.flags.writeable or not value.flags.c_contiguous:
            value = np.array(value)
        return torch.from_numpy(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return value.tolist()
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        # a column of numeric arrays of different shapes (variable-length lists): a
        # list of tensors, one per record, as torch's pad_sequence takes them
        return [_to_tensor(v) for v in value]
    return value


def _tensors(columns: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`_to_tensor` of every column, the common case (a fresh, contiguous numeric
    array) without a call per column: this runs for every batch."""
    batch = {}
    for name, column in columns.items():
        if type(column) is np.ndarray and column.dtype.kind in "biuf":
            flags = column.flags
            if flags.writeable and flags.c_contiguous:
                batch[name] = torch.from_numpy(column)
                continue
        batch[name] = _to_tensor(column)
    return batch


def collate(records: list[Any]) -> Any:
    """Stack a list of records into a batch.

    Dict records become a dict of columns: numeric values (numpy arrays, numpy scalars,
    Python numbers) are stacked into one tensor per column, tensors with ``torch.stack``,
    anything else (bytes, strings, objects) is kept as a list. Other records go through
    ``torch.utils.data.default_collate``.
    """
    if not records or not isinstance(records[0], Mapping):
        return torch.utils.data.default_collate(records)
    batch: dict[str, Any] = {}
    for key in records[0]:
        values = [record[key] for record in records]
        first = values[0]
        if isinstance(first, (torch.Tensor, np.ndarray)) and not _one_shape(values):
            # 1-D arrays of varying length (a store's list column, token ids): a list of
            # tensors, as the columnar path and torch's pad_sequence have them
            batch[key] = _to_tensor(_variable_lengths(key, values))
            continue
        if isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, (np.ndarray, np.generic, int, float)) and not isinstance(
            first, bool
        ):
            stacked = np.stack(values) if isinstance(first, np.ndarray) else np.asarray(values)
            batch[key] = _to_tensor(stacked)
        else:
            batch[key] = values
    return batch


def _one_shape(values: list[Any]) -> bool:
    shape = values[0].shape
    return all(getattr(v, "shape", None) == shape for v in values)


def _variable_lengths(key: str, values: list[Any]) -> list[Any]:
    """A column's 1-D numeric arrays of varying length, as they are; any other mix of
    shapes cannot become one batch tensor and is an error that says what to do."""
    if all(isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim == 1 for v in values):
        return [v.numpy() if isinstance(v, torch.Tensor) else v for v in values]
    shapes = {tuple(v.shape) for v in values if isinstance(v, (torch.Tensor, np.ndarray))}
    raise Error(
        f"column {key!r} has arrays of {len(shapes)} shapes in one batch (e.g. "
        f"{sorted(shapes)[:3]}), which collate cannot stack; give them one shape in "
        f"the transform (pad or crop), or pass a collate_fn (e.g. one that calls "
        f"torch.nn.utils.rnn.pad_sequence)"
    )


def identity(batch: Any) -> Any:
    """The DataLoader's ``collate_fn``: a Fetcher already returns whole batches."""
    return batch


# Tensors of at most this many bytes go from a worker to the main process by value through
# the result pipe; larger ones through shared memory. Each tensor in shared memory costs
# about 1 ms of worker CPU and 0.5 ms of main-process CPU (a new segment, its page faults,
# the shm manager, opening it by name), whatever its size: measured on 2 cores, a batch of
# a 393 KiB image tensor and 32 labels took 1.7 ms (worker) + 1.3 ms (main) that way and
# 0.6 + 0.75 ms by value. From about 1 MiB on, copying through the pipe costs the main
# process more than opening a segment (4.2 against 1.7 ms at 1.2 MiB).
_BY_VALUE_BYTES = 512 * 1024


class _ByValue:
    """A batch whose small tensors pickle as numpy arrays (bytes in the message) and come
    back as tensors: unpickling in the main process gives the plain batch."""

    __slots__ = ("batch",)

    def __init__(self, batch: Any) -> None:
        self.batch = batch

    def __reduce__(self) -> tuple[Any, ...]:
        return (_from_arrays, (_to_arrays(self.batch),))


class _Array:
    """A small tensor's values on their way to the main process."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, ...]:
        return (_tensor_from, (self.array,))


def _tensor_from(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)


def _to_arrays(value: Any) -> Any:
    if type(value) is torch.Tensor:
        if (
            value.device.type == "cpu"
            and value.layout == torch.strided
            and not value.requires_grad
            and value.dtype in _NUMPY_DTYPES
            and value.numel() * value.element_size() <= _BY_VALUE_BYTES
        ):
            return _Array(value.numpy())
        return value
    if type(value) is dict:
        return {k: _to_arrays(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_to_arrays(v) for v in value)
    return value


def _from_arrays(value: Any) -> Any:
    # the _Array leaves are tensors again by now (unpickled before their container)
    return value


_NUMPY_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    }
)


def send_small_by_value(batch: Any) -> Any:
    """The DataLoader's ``collate_fn`` (it runs in the worker, after the Fetcher): the
    batch as it is, its small tensors marked to travel by value."""
    return _ByValue(batch)


class Fetcher:
    """Builds a whole batch from a :class:`Request`; runs in the DataLoader's workers."""

    def __init__(
        self,
        source: Any,
        *,
        seed: int,
        transform: Transform | None,
        seed_globals: bool,
        with_index: bool,
        collate_fn: Callable[[list[Any]], Any] | None,
    ) -> None:
        self.source = source
        self.seed = seed
        self.transform = transform
        self.with_index = with_index
        self.collate_fn = collate_fn or collate
        self.deterministic = bool(getattr(source, "deterministic", False))
        self.seed_globals = seed_globals and (transform is not None or not self.deterministic)
        self.columnar = (
            transform is None
            and collate_fn is None
            and not self.seed_globals
            and callable(getattr(source, "get_columns", None))
        )
        self._n = len(source)
        self._rngs = SampleRNGs(seed)
        self.epoch_dependent = bool(getattr(source, "epoch_dependent", False))
        self._bound: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        raise TypeError("epochal's fetcher builds whole batches; it is only called with batches")

    def _source_at(self, epoch: int) -> Any:
        # --- epoch hook (token windows, issue 17): a source whose records depend on the
        # epoch (``epoch_dependent``) is read through ``for_epoch(epoch, seed=...)``, a
        # plain Source of the same length; the bound view is kept for the epoch's batches
        if not self.epoch_dependent:
            return self.source
        if self._bound is None or self._bound[0] != epoch:
            self._bound = (epoch, self.source.for_epoch(epoch, seed=self.seed))
        return self._bound[1]

    def __getitems__(self, request: Request) -> Any:
        source = self._source_at(request.epoch) if self.epoch_dependent else self.source
        if self.columnar:
            batch = _tensors(source.get_columns(request.indices))
        else:
            batch = self.collate_fn(self._records(request, source))
        if self.with_index:
            if not isinstance(batch, dict):
                raise Error(
                    f"with_index=True needs batches that are dicts of columns, got "
                    f"{type(batch).__name__}; return dict records from the source/transform"
                )
            repeat = torch.zeros(len(request.indices), dtype=torch.bool)
            if request.repeats:
                repeat[-request.repeats :] = True
            batch[INDEX_KEY] = torch.from_numpy(request.indices.copy())
            batch[REPEAT_KEY] = repeat
        return batch

    def _records(self, request: Request, source: Any) -> list[Any]:
        epoch, indices = request.epoch, request.indices.tolist()
        if not self.seed_globals:
            records = get_many(source, request.indices)
            return [self._transform(r, epoch, i) for r, i in zip(records, indices)]
        with GlobalRNGs() as global_rngs:
            batch_read: list[Any] | None = None
            if self.deterministic or is_batched(source):
                if not self.deterministic:
                    # the dataset reads the whole batch in one call, so the global RNGs can
                    # only be seeded once around it, from the batch's first record
                    global_rngs.seed(sample_seed(self.seed, epoch, indices[0]))
                batch_read = get_many(source, request.indices)
            out = []
            for j, index in enumerate(indices):
                global_rngs.seed(sample_seed(self.seed, epoch, index))
                record = source[index] if batch_read is None else batch_read[j]
                out.append(self._transform(record, epoch, index))
            return out

    def _transform(self, record: Any, epoch: int, index: int) -> Any:
        if self.transform is None:
            return record
        try:
            return self.transform(record, self._rngs(epoch, index))
        except Exception as error:
            # the exception keeps its type (callers may catch it); the note names the record,
            # and DataLoader's worker traceback carries it to the main process
            _add_note(error, f"epochal: in the transform of record {index} of epoch {epoch}")
            raise


def _add_note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # Python 3.10: same attribute, shown by 3.11+ tracebacks only
        error.__notes__ = [*getattr(error, "__notes__", ()), note]  # type: ignore[attr-defined]


def start_worker(worker_id: int) -> None:
    """Worker start-up: large tensors of a batch travel through named shared memory
    ("file_system"), which the main process opens by name, instead of a file descriptor
    per tensor passed over a socket after an authentication handshake (about 0.5 ms of
    both processes' time per tensor, per batch); small ones go by value (see
    :func:`send_small_by_value`). Only this worker's setting changes; torch's
    shared-memory manager removes the segments even after a SIGKILL."""
    import torch.multiprocessing

    if "file_system" in torch.multiprocessing.get_all_sharing_strategies():
        torch.multiprocessing.set_sharing_strategy("file_system")


def start_worker_then(user_init: Callable[[int], None], worker_id: int) -> None:
    """:func:`start_worker`, then the caller's ``worker_init_fn``."""
    start_worker(worker_id)
    user_init(worker_id)
