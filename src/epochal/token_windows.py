"""Token streams for language-model pretraining: packed windows whose boundaries move.

``epochal.tokens(stream, seq_len)`` is a Source over a 1-D token stream of ``N`` tokens
(an array, a memmap, a ``.npy``/raw file, or a store built by ``epochal build
--tokenizer``). Record ``i`` of epoch ``e`` is ``{"tokens": stream[s : s + seq_len + 1]}``
with ``s = offset(seed, e) + i * seq_len``: inputs are ``tokens[:-1]``, targets
``tokens[1:]``, and consecutive windows share their boundary token, so each token of the
covered span is a target exactly once per epoch.

Geometry (the rule that keeps ``len(source)`` fixed while boundaries move):

- ``S = seq_len``; the epoch offset is keyed by ``(seed, epoch)`` and uniform in
  ``[0, R)`` with ``R = S`` (or ``N - S`` for a stream shorter than ``2 S``);
- ``W = N // S - 1`` windows per epoch (``1`` when ``N < 2 S``), the most that fit at
  every offset, so every epoch has the same number of records;
- the covered span is ``[offset, offset + W S]``: ``W S + 1`` tokens
  (:attr:`TokenSource.tokens_per_epoch`). The others, fewer than ``2 S`` per epoch
  (:attr:`TokenSource.uncovered_per_epoch`: the head before the offset and the tail
  after the last window), are left out of that epoch only; which ones changes with
  the offset.

Windows go through the usual order, plan and Loader: global shuffle of the windows,
sharding, exact elastic resume and per-sample RNG hold unchanged. Memory is O(1) in the
number of tokens: a window's start is arithmetic, never an index array.

The records depend on the epoch, so the source declares ``epoch_dependent = True`` and the
Loader reads epoch ``e``'s batches from ``source.for_epoch(e, seed=loader.seed)`` (see
:class:`epochal.Source`). Indexing the source itself (``source[i]``) reads epoch 0 of
seed 0.

Documents: with ``eos_id``, every EOS token ends a document; with ``doc_offsets`` (the
start of every document in the stream, as in Arrow's list offsets: documents given as a
column of token arrays, no separator token) the last token of each document does, exactly
as an EOS would. A list of 1-D token arrays is joined into one stream with those offsets
(in memory; for large data pass a flat memmap and its offsets). ``boundaries=True`` adds
``"position_ids"`` (``(seq_len,)`` per record: position within its document of each input
token, restarting at 0 after every EOS and at the window start) and, in batches read
without a transform, ``"cu_seqlens"`` (int32 offsets of the documents' pieces in the
flattened ``(batch * seq_len)`` inputs, for varlen attention; :meth:`TokenSource.cu_seqlens`
computes it from ``position_ids`` otherwise). ``straddle="drop"`` adds ``"loss_mask"``
(``(seq_len,)`` bool): targets after the first document end of a window are masked out,
so a window never trains on the tail that starts the next document (those tokens are the
ones "dropped"; the default ``"keep"`` packs across documents).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from typing import Any

import numpy as np

from epochal._errors import Error, OutOfRangeError
from epochal.order import _splitmix64

__all__ = ["STRADDLE_POLICIES", "TokenSource", "tokens"]

STRADDLE_POLICIES = ("keep", "drop")
_OFFSET_SALT = 0x243F6A8885A308D3  # keeps window offsets unrelated to the Loader's own order
_FINGERPRINT_SAMPLES = 64  # tokens hashed into the fingerprint, spread over the stream
TOKENS_METADATA = "tokens"  # manifest metadata key of a store built by `epochal build --tokenizer`


class _Blocks:
    """A token stream held as fixed-size blocks: column ``"tokens"`` of a Source (a store).

    A window may span blocks; a batch reads every block its windows touch in one
    ``get_columns`` call, then slices the windows out of those blocks laid end to end.
    """

    def __init__(self, source: Any, num_tokens: int) -> None:
        first = source[0]["tokens"]
        self.source = source
        self.block = int(np.asarray(first).shape[0])
        self.dtype = np.asarray(first).dtype
        self.num_tokens = num_tokens
        if not 0 < num_tokens <= len(source) * self.block:
            raise Error(
                f"a token store of {len(source)} blocks of {self.block} tokens cannot hold "
                f"{num_tokens} tokens"
            )

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        first = starts // self.block
        last = (starts + length - 1) // self.block
        span = int((last - first).max()) + 1
        needed = np.unique((first[:, None] + np.arange(span)).clip(max=last[:, None]))
        flat = np.asarray(self.source.get_columns(needed)["tokens"]).reshape(-1)
        # every block between a window's first and last is in `needed`, so its tokens are
        # contiguous in `flat` from its first block's place on
        at = np.searchsorted(needed, first) * self.block + starts % self.block
        return np.lib.stride_tricks.sliding_window_view(flat, length)[at]

    def sample(self, positions: np.ndarray) -> np.ndarray:
        return np.concatenate([self.windows(np.array([p]), 1)[0] for p in positions.tolist()])


class TokenSource:
    """Windows of ``seq_len + 1`` tokens of a token stream, at a per-epoch offset.

    See the module docstring for the geometry, the documents options and the epoch hook.
    Build it with :func:`epochal.tokens`.

    Attributes:
        seq_len: tokens per window minus one (the model's context length).
        num_tokens: tokens in the stream, ``N``.
        tokens_per_epoch: tokens in an epoch's windows, ``W * seq_len + 1``.
        uncovered_per_epoch: tokens of the stream in none of an epoch's windows.
        eos_id: the token that ends a document, or None.
        doc_offsets: the first token of every document (int64), or None.
    """

    deterministic = True
    epoch_dependent = True  # records depend on the epoch: the Loader calls for_epoch()

    def __init__(
        self,
        data: Any,
        seq_len: int,
        *,
        eos_id: int | None = None,
        doc_offsets: Any = None,
        boundaries: bool = False,
        straddle: str = "keep",
        dtype: Any = None,
    ) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
            raise Error(f"seq_len must be a positive integer, got {seq_len!r}")
        if straddle not in STRADDLE_POLICIES:
            raise Error(f"straddle must be one of {list(STRADDLE_POLICIES)}, got {straddle!r}")
        self.seq_len = int(seq_len)
        self._path: str | None = None
        self._dtype = dtype
        self._array: np.ndarray | None = None
        self._blocks: _Blocks | None = None
        self._view: np.ndarray | None = None
        meta: dict[str, Any] = {}
        if isinstance(data, (list, tuple)) and data and all(np.ndim(d) == 1 for d in data):
            if doc_offsets is not None:
                raise Error("pass doc_offsets with a flat stream, not with a list of documents")
            data = [d for d in data if len(d)]  # an empty document has no tokens to place
            lengths = [len(d) for d in data]
            doc_offsets = np.cumsum([0, *lengths[:-1]])
            data = np.concatenate([np.asarray(d) for d in data])
        if isinstance(data, (str, os.PathLike)):
            self._path = os.fspath(data)
            n = len(self._stream())
        elif isinstance(data, np.ndarray) or not hasattr(data, "get_columns"):
            array = data if isinstance(data, np.ndarray) else np.asarray(data)
            self._array = array
            n = len(array) if array.ndim == 1 else -1
            if array.ndim != 1:
                raise Error(f"a token stream must be 1-D, got an array of shape {array.shape}")
        else:
            meta = dict(getattr(data, "metadata", {}) or {}).get(TOKENS_METADATA, {})
            rows = np.asarray(data[0].get("tokens") if isinstance(data[0], dict) else None)
            if rows.ndim != 1:
                raise Error(
                    f"a token Source needs a fixed-size 1-D column 'tokens' per record (a "
                    f"store built by `epochal build --tokenizer`), got {data!r}"
                )
            # blocks are full but the last, whose "length" column says how full it is
            last = data[len(data) - 1]
            tail = int(last["length"]) if "length" in last else rows.shape[0]
            n = (len(data) - 1) * rows.shape[0] + tail
            self._blocks = _Blocks(data, n)
            eos_id = meta.get("eos_id") if eos_id is None else eos_id
        dtype_kind = self._dtype_of().kind
        if dtype_kind not in "iu":
            raise Error(f"tokens must be integers, got dtype {self._dtype_of()}")
        if n < self.seq_len + 1:
            raise Error(
                f"a token stream of {n} tokens is shorter than one window of seq_len + 1 = "
                f"{self.seq_len + 1} tokens; lower seq_len"
            )
        self.doc_offsets = None if doc_offsets is None else _check_offsets(doc_offsets, n)
        if (boundaries or straddle == "drop") and eos_id is None and doc_offsets is None:
            raise Error(
                "boundaries=True and straddle='drop' need eos_id (the token that ends a "
                "document) or doc_offsets (where each document starts)"
            )
        self.num_tokens = n
        self.eos_id = None if eos_id is None else int(eos_id)
        self.boundaries = bool(boundaries)
        self.straddle = straddle
        s = self.seq_len
        self._windows = n // s - 1 if n >= 2 * s else 1
        self._offsets = s if n >= 2 * s else n - s
        self.tokens_per_epoch = self._windows * s + 1
        self.uncovered_per_epoch = n - self.tokens_per_epoch
        self._fingerprint: str | None = None

    @property
    def fast_gather(self) -> bool:
        """A stream in memory (or memory-mapped) is sliced in the calling process."""
        if self._blocks is not None:
            return bool(getattr(self._blocks.source, "fast_gather", False))
        return True

    def _dtype_of(self) -> np.dtype:
        if self._blocks is not None:
            return self._blocks.dtype
        return self._stream().dtype

    def _stream(self) -> np.ndarray:
        """The stream as a 1-D array, memory-mapped on first use in each process."""
        if self._array is None:
            assert self._path is not None
            if self._path.endswith(".npy"):
                self._array = np.load(self._path, mmap_mode="r")
            elif self._dtype is None:
                raise Error(
                    f"{self._path!r} is a raw token file: pass dtype= (e.g. numpy.uint16), or "
                    f"save it with numpy.save as .npy"
                )
            else:
                self._array = np.memmap(self._path, dtype=self._dtype, mode="r")
            mapping = getattr(self._array, "_mmap", None)
            if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
                # windows are read in shuffled order, and the kernel's readahead around
                # each page fault reads (or in a sparse file zero-fills) far more than a
                # window: random 2 KiB windows of a 20 GB file were ~200x slower with it
                mapping.madvise(mmap.MADV_RANDOM)
            if self._array.ndim != 1:
                raise Error(
                    f"{self._path!r} holds an array of shape {self._array.shape}; a token "
                    f"stream is 1-D"
                )
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        # a stream opened from a file is reopened by path in the other process, never
        # copied; the window view is rebuilt (pickling it would write out every window)
        state = dict(self.__dict__)
        state["_view"] = None
        if self._path is not None:
            state["_array"] = None
        return state

    def __len__(self) -> int:
        return self._windows

    def offset(self, epoch: int, *, seed: int = 0) -> int:
        """The stream position where window 0 of ``epoch`` starts, in ``[0, seq_len)``."""
        key = _splitmix64(seed ^ _splitmix64((epoch ^ _OFFSET_SALT) & (1 << 64) - 1))
        return key % self._offsets

    def for_epoch(self, epoch: int, *, seed: int = 0) -> EpochWindows:
        """The windows of ``epoch`` as a Source of the same length (the Loader's hook)."""
        return EpochWindows(self, self.offset(epoch, seed=seed))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.for_epoch(0)[index]

    def get_columns(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Epoch 0's windows ``indices`` as columns (see :meth:`for_epoch`)."""
        return self.for_epoch(0).get_columns(indices)

    def get_many(self, indices: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Epoch 0's windows ``indices`` as records (see :meth:`for_epoch`)."""
        return self.for_epoch(0).get_many(indices)

    def windows(self, starts: np.ndarray) -> np.ndarray:
        """``(len(starts), seq_len + 1)`` tokens starting at the stream positions ``starts``."""
        length = self.seq_len + 1
        if self._blocks is not None:
            return self._blocks.windows(starts, length)
        if self._view is None:  # built once per process: it costs ~0.1 ms, a gather's worth
            self._view = np.lib.stride_tricks.sliding_window_view(self._stream(), length)
        return self._view[starts]

    @staticmethod
    def cu_seqlens(position_ids: Any) -> np.ndarray:
        """Offsets of the document pieces in the flattened batch of inputs (int32).

        ``position_ids`` is a ``(batch, seq_len)`` array (or tensor) of positions within
        documents; a piece starts wherever the position is 0. The result starts at 0 and
        ends at ``batch * seq_len``, as flash-attention's varlen kernels expect.
        """
        flat = np.asarray(position_ids).reshape(-1)
        starts = np.flatnonzero(flat == 0)
        return np.append(starts, flat.size).astype(np.int32)

    @property
    def fingerprint(self) -> str:
        """Hash of ``seq_len``, the stream's length and dtype, and 64 sampled tokens."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=8)
            digest.update(
                f"tokens:{self.seq_len}:{self.num_tokens}:{self._dtype_of().str}:"
                f"{self.eos_id}:{self.boundaries}:{self.straddle}".encode()
            )
            if self.doc_offsets is not None:
                digest.update(self.doc_offsets.tobytes())
            picks = np.unique(np.linspace(0, self.num_tokens - 1, _FINGERPRINT_SAMPLES))
            picks = picks.astype(np.int64)
            if self._blocks is not None:
                sample = self._blocks.sample(picks)
            else:
                sample = np.ascontiguousarray(self._stream()[picks])
            digest.update(sample.tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"TokenSource(num_tokens={self.num_tokens}, seq_len={self.seq_len}, "
            f"windows={self._windows}, eos_id={self.eos_id})"
        )


class EpochWindows:
    """One epoch's windows of a :class:`TokenSource`: a plain Source, fixed offset."""

    deterministic = True

    def __init__(self, tokens: TokenSource, offset: int) -> None:
        self.tokens = tokens
        self.offset = offset
        self.fast_gather = tokens.fast_gather

    def __len__(self) -> int:
        return len(self.tokens)

    def starts(self, indices: np.ndarray) -> np.ndarray:
        """Stream positions where the windows ``indices`` start."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self.tokens)
        if indices.size and int(indices.view(np.uint64).max()) >= n:
            bad = int(indices[(indices < 0) | (indices >= n)][0])
            raise OutOfRangeError(f"window index {bad} is out of range for {n} windows")
        return self.offset + indices * self.tokens.seq_len

    def get_columns(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The windows ``indices`` as a ``"tokens"`` column, plus the document columns."""
        src = self.tokens
        windows = src.windows(self.starts(indices))
        columns = {"tokens": windows}
        if src.boundaries or src.straddle == "drop":
            columns.update(_document_columns(_ends(windows, self.starts(indices), src), src))
        if src.boundaries:
            columns["cu_seqlens"] = TokenSource.cu_seqlens(columns["position_ids"])
        return columns

    def get_many(self, indices: np.ndarray) -> list[dict[str, np.ndarray]]:
        """The windows ``indices`` as records (no batch-level ``cu_seqlens``)."""
        columns = self.get_columns(indices)
        columns.pop("cu_seqlens", None)
        return [{k: v[j] for k, v in columns.items()} for j in range(len(columns["tokens"]))]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.get_many(np.array([index]))[0]


def _check_offsets(offsets: Any, n: int) -> np.ndarray:
    array = np.asarray(offsets)
    if array.ndim != 1 or array.dtype.kind not in "iu" or not array.size:
        raise Error(f"doc_offsets must be a non-empty 1-D integer array, got {array!r}")
    array = array.astype(np.int64)
    if array[0] != 0 or array[-1] >= n or (array.size > 1 and np.any(np.diff(array) <= 0)):
        raise Error(
            f"doc_offsets must start at 0 and increase strictly, below the stream's {n} "
            f"tokens (one start per non-empty document); got {array[:8].tolist()}..."
        )
    return array


def _ends(windows: np.ndarray, starts: np.ndarray, src: TokenSource) -> np.ndarray:
    """Whether each token of each window ends a document (an EOS, or a document's last)."""
    if src.doc_offsets is None:
        return windows == src.eos_id
    following = starts[:, None] + np.arange(1, src.seq_len + 2)  # the position after each
    k = np.searchsorted(src.doc_offsets, following)
    k_in = np.minimum(k, len(src.doc_offsets) - 1)
    return (k < len(src.doc_offsets)) & (src.doc_offsets[k_in] == following)


def _document_columns(is_eos: np.ndarray, src: TokenSource) -> dict[str, np.ndarray]:
    """``position_ids`` and/or ``loss_mask`` of a batch of windows (vectorised)."""
    out: dict[str, np.ndarray] = {}
    s = src.seq_len
    if src.boundaries:
        # a document starts at the window start and right after every EOS input token
        starts = np.zeros((len(is_eos), s), dtype=bool)
        starts[:, 0] = True
        starts[:, 1:] = is_eos[:, : s - 1]
        at = np.arange(s, dtype=np.int64)
        last_start = np.maximum.accumulate(np.where(starts, at, 0), axis=1)
        out["position_ids"] = at - last_start
    if src.straddle == "drop":
        # target j is token j + 1: keep it up to and including the first EOS after token 0
        ends = is_eos[:, 1:]
        first_end = np.where(ends.any(axis=1), ends.argmax(axis=1), s)
        out["loss_mask"] = np.arange(s) <= first_end[:, None]
    return out


def tokens(
    data: Any,
    seq_len: int,
    *,
    eos_id: int | None = None,
    doc_offsets: Any = None,
    boundaries: bool = False,
    straddle: str = "keep",
    dtype: Any = None,
) -> TokenSource:
    """Language-model windows over a token stream: ``epochal.tokens(stream, 1024)``.

    Each record is ``{"tokens": seq_len + 1 consecutive tokens}``; every epoch cuts the
    stream at a new keyed offset, so window boundaries move between epochs while each
    token of the epoch's span is a target exactly once (see the module docstring for the
    exact count). Pass it to :class:`epochal.Loader` like any source.

    Args:
        data: a 1-D integer array or memmap; a path to a ``.npy`` file or a raw token
            file (with ``dtype``); or a store built by ``epochal build --tokenizer``
            (``epochal.open(path)``: blocks of tokens, EOS id from its metadata); or a
            list of 1-D token arrays, one per document (joined in memory, with
            ``doc_offsets`` set from their lengths).
        seq_len: the context length; windows hold ``seq_len + 1`` tokens.
        eos_id: the token that ends each document (needed by ``boundaries`` and
            ``straddle="drop"``).
        doc_offsets: the first token of every document (sorted, from 0), instead of an
            ``eos_id``: the last token of each document then ends it.
        boundaries: add ``"position_ids"`` and ``"cu_seqlens"`` (documents within windows).
        straddle: ``"keep"`` packs across document ends; ``"drop"`` adds a ``"loss_mask"``
            that masks a window's targets after its first document end.
        dtype: the token dtype of a raw file.

    Returns:
        A :class:`TokenSource`.

    Raises:
        epochal.Error: a stream shorter than one window, a non-integer or non-1-D stream,
            a bad ``seq_len`` or ``straddle``, document options without ``eos_id`` or
            ``doc_offsets``, or offsets that are not sorted starts inside the stream.
    """
    return TokenSource(
        data,
        seq_len,
        eos_id=eos_id,
        doc_offsets=doc_offsets,
        boundaries=boundaries,
        straddle=straddle,
        dtype=dtype,
    )
