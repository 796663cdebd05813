"""torch.distributed helpers: init from torchrun's environment, DDP wrapping, rank 0 (P10).

Launch with ``torchrun --nproc_per_node N -m epochal train CONFIG``: ``init_distributed``
reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the environment and starts the process
group (NCCL on CUDA, gloo on CPU). Without those variables everything runs as a single
process and every helper here degrades to its one-process meaning (rank 0 of 1).

Evaluation across ranks: the Loader gives every rank the same number of batches and, with
``with_index=True``, marks padded repeats of the final partial batch in ``batch["_repeat"]``.
:class:`MeanMetrics` sums per-record values with those repeats masked out and reduces
across ranks, so N ranks report the one number a single process would.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import nn

from epochal._errors import InvalidValueError

__all__ = [
    "DistInfo",
    "MeanMetrics",
    "barrier",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "unwrap_model",
    "wrap_model",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_distributed(*, device: str = "auto", backend: str | None = None) -> DistInfo:
    """Start the process group from torchrun's environment variables, if they are set.

    Args:
        device: ``"auto"`` (this rank's CUDA device when CUDA is available, else CPU),
            ``"cpu"``, ``"cuda"`` or ``"mps"``.
        backend: Process-group backend; default NCCL for CUDA, gloo otherwise.

    Returns:
        This process's rank, world size, local rank and the device it should train on.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda", "mps"):
        raise InvalidValueError(f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if device == "cuda" else "gloo"))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def get_rank() -> int:
    """This process's rank (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes in the job (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0: the one process that logs, writes TensorBoard events and saves."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def wrap_model(
    model: nn.Module, *, device: torch.device, sync_batchnorm: bool = False
) -> nn.Module:
    """Move ``model`` to ``device`` and wrap it in DistributedDataParallel when world size > 1.

    Args:
        model: The bare model.
        device: This rank's device (``DistInfo.device``).
        sync_batchnorm: Convert BatchNorm layers to SyncBatchNorm so that batch statistics
            are computed over the global batch, not each rank's slice (P10).
    """
    model = model.to(device)
    if get_world_size() == 1:
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel / ``torch.compile`` wrappers (any nesting)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class MeanMetrics:
    """Means of per-record values over a whole evaluation set, correct across ranks.

    Example::

        metrics = MeanMetrics(device)
        for batch in val_loader:             # Loader(..., with_index=True)
            losses = loss_fn(model(x), y, reduction="none")
            metrics.update(batch["_repeat"], loss=losses, accuracy=(pred == y).float())
        result = metrics.compute()            # identical on every rank
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._sums: dict[str, torch.Tensor] = {}
        self._count = torch.zeros((), dtype=torch.float64, device=self.device)

    def update(self, repeat: torch.Tensor | None, **values: torch.Tensor) -> None:
        """Add one batch of per-record values; records where ``repeat`` is True are ignored.

        Args:
            repeat: The Loader's ``batch["_repeat"]`` (bool, one per record), or None when
                the batch has no padded repeats.
            **values: One 1-D tensor per metric, one value per record of the batch.
        """
        if not values:
            raise InvalidValueError(
                "MeanMetrics.update() needs at least one metric, e.g. loss=losses"
            )
        keep = None if repeat is None else ~repeat.to(device=self.device, dtype=torch.bool)
        count = None
        for name, value in values.items():
            value = value.detach().to(device=self.device, dtype=torch.float64).reshape(-1)
            if keep is not None:
                if keep.shape != value.shape:
                    raise InvalidValueError(
                        f"metric {name!r} has {value.numel()} values but the batch has "
                        f"{keep.numel()} records"
                    )
                value = value[keep]
            count = value.numel() if count is None else count
            if value.numel() != count:
                raise InvalidValueError(
                    f"metric {name!r} has {value.numel()} values, expected {count}"
                )
            if name not in self._sums:
                self._sums[name] = torch.zeros((), dtype=torch.float64, device=self.device)
            self._sums[name] += value.sum()
        self._count += count or 0

    def compute(self) -> dict[str, float]:
        """The mean of every metric over all records seen by all ranks (a collective call)."""
        names = sorted(self._sums)
        totals = torch.stack([self._sums[name] for name in names] + [self._count])
        if get_world_size() > 1:
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        count = float(totals[-1])
        if count == 0:
            return {name: float("nan") for name in names}
        return {name: float(totals[i]) / count for i, name in enumerate(names)}
