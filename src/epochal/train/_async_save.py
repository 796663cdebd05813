"""Asynchronous checkpoint saving: a consistent in-memory snapshot, and its writer thread.

:func:`snapshot` deep-copies a nested state (dicts, lists, tuples of tensors and plain
values) with every tensor copied into CPU memory, so training may go on mutating (or
freeing) the originals while a background thread serialises the copy. Tensors that share
a storage in the original share one storage in the copy, with the same offset, size and
stride, so ``torch.save`` of the copy writes the same storages, bytes and layout as
``torch.save`` of the original would have at that instant (the only difference: a CUDA
tensor comes back as a CPU tensor, which is what ``restore(map_location="cpu")`` gives
in any case). :class:`PendingSave` runs the write of one snapshot in a background thread
and keeps the error it ended with for the Checkpointer to raise.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["PendingSave", "snapshot"]

_PLAIN = (torch.Tensor, nn.Parameter)  # types whose storages are copied directly


def snapshot(state: Any) -> Any:
    """A deep copy of ``state`` with every tensor copied into CPU memory.

    Containers (including an ``OrderedDict``'s attributes such as a model state dict's
    ``_metadata``) and plain values are copied by :func:`copy.deepcopy`; tensors found
    inside dicts, lists, tuples and sets are copied storage by storage into CPU memory,
    keeping the sharing between them. A tensor hidden inside another object, or one of an
    unusual kind (sparse, quantized, a subclass), is deep-copied on its own device instead.
    """
    storages: dict[tuple[torch.device, int, int], torch.UntypedStorage] = {}
    memo: dict[int, Any] = {}
    stack = [state]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            memo[id(obj)] = _cpu_copy(obj, storages)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
    return copy.deepcopy(state, memo)


def _cpu_copy(
    tensor: torch.Tensor, storages: dict[tuple[torch.device, int, int], torch.UntypedStorage]
) -> torch.Tensor:
    if (
        type(tensor) not in _PLAIN
        or tensor.layout != torch.strided
        or tensor.is_quantized
        or tensor.is_meta
        or tensor.is_conj()
        or tensor.is_neg()
    ):
        return copy.deepcopy(tensor)
    source = tensor.untyped_storage()
    key = (source.device, source.data_ptr(), source.nbytes())
    target = storages.get(key)
    if target is None:
        target = torch.UntypedStorage(source.nbytes())
        target.copy_(source)
        if source.nbytes():  # empty storages all have data_ptr 0: never shared
            storages[key] = target
    out = torch.empty((), dtype=tensor.dtype).set_(
        target, tensor.storage_offset(), tensor.size(), tensor.stride()
    )
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(out, requires_grad=tensor.requires_grad)
    return out.requires_grad_(tensor.requires_grad) if tensor.requires_grad else out


class PendingSave:
    """The one background write in flight: its thread, and the error it ended with."""

    def __init__(self, step: int, path: Path, write: Callable[[], None]) -> None:
        self.step = step
        self.path = path
        self.error: BaseException | None = None
        # not a daemon: an interpreter that exits normally finishes the write first
        self.thread = threading.Thread(
            target=self._run, args=(write,), name=f"epochal-checkpoint-{step}"
        )
        self.thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as err:  # handed to the main thread by Checkpointer.wait()
            self.error = err
