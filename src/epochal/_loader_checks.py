"""The Loader's argument checks: its topology, and DataLoader habits that epochal replaces.

A DataLoader user brings a torch sampler, a ``generator`` or a ``batch_sampler``; each is
refused with what does its job in epochal, so the mistake costs one read of the message.
"""

from __future__ import annotations

from typing import Any

from epochal._errors import Error

__all__ = ["check_dataloader_only", "check_sampler", "topology"]


def topology(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the ones given, else torch.distributed's, else ``(0, 1)``."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    world_size = 1 if world_size is None else int(world_size)
    rank = 0 if rank is None else int(rank)
    if world_size < 1:
        raise Error(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise Error(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


# torch samplers a DataLoader user may pass, and what does their job in epochal
_SAMPLER_HINTS = {
    "DistributedSampler": "epochal shards by rank itself: drop the sampler (rank/world_size "
    "come from torch.distributed, or pass rank= and world_size=)",
    "RandomSampler": "use shuffle=True (a new global shuffle every epoch, from seed)",
    "SequentialSampler": "use shuffle=False",
    "SubsetRandomSampler": "use epochal.subset(source, indices) with shuffle=True",
    "WeightedRandomSampler": "use sampler=epochal.WeightedSampler(weights) "
    "(or epochal.balanced(...))",
}


def check_sampler(sampler: Any) -> None:
    """Refuse a torch sampler (or anything else) where an epochal sampler belongs."""
    if sampler is None or (hasattr(sampler, "order") and hasattr(sampler, "num_records")):
        return
    name = type(sampler).__name__
    hint = _SAMPLER_HINTS.get(
        name,
        "epochal computes the order from (seed, epoch); use shuffle=, epochal.subset(...) or "
        "an epochal sampler (epochal.WeightedSampler, epochal.balanced)",
    )
    raise Error(f"sampler={name} is not an epochal sampler: {hint}")


def check_dataloader_only(
    *, generator: Any, batch_sampler: Any, in_order: bool, pin_memory_device: str
) -> None:
    """Refuse the DataLoader arguments that epochal replaces, saying what replaces each."""
    if generator is not None:
        raise Error(
            f"generator={generator!r} is not used by epochal: the order and per-sample "
            f"randomness come from seed=<int> (e.g. seed=generator.initial_seed() % 2**64)"
        )
    if batch_sampler is not None:
        raise Error(
            f"batch_sampler={type(batch_sampler).__name__} is not supported: epochal builds "
            f"batches from batch_size and drop_last (per rank); reweight or restrict records "
            f"with sampler=epochal.WeightedSampler(...) or epochal.subset(...)"
        )
    if in_order is not True:
        raise Error(
            f"in_order={in_order!r} is not supported: batches come in order so that a "
            f"state counts exactly the batches delivered (exact resume)"
        )
    if pin_memory_device:
        raise Error(
            f"pin_memory_device={pin_memory_device!r} is not supported: pin_memory=True pins "
            f"for the current accelerator"
        )
