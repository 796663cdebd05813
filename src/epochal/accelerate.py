"""Hugging Face Accelerate: ``epochal.accelerate.prepare(accelerator, model, optimizer, loader)``.

Accelerate's own ``accelerator.prepare()`` returns an epochal ``Loader`` untouched (it
only wraps ``torch.utils.data.DataLoader``), and ``save_state()`` saves only what it
prepared or what was passed to ``register_for_checkpointing``; a Loader that was merely
passed through ``prepare()`` would restart its epoch after ``load_state()``. This
``prepare`` is a drop-in for the accelerator's: it prepares every other object with
``accelerator.prepare`` (same order, same return shape) and registers each Loader for
checkpointing, so ``save_state``/``load_state`` carry its position and a resumed run reads
exactly the batches the interrupted one had not.

The Loader needs no other preparing: it reads rank and world size from
``torch.distributed`` (which the Accelerator set up) when a pass starts, and its state is a
global position, so the main process's saved state restores every rank. Its batches stay
on the CPU (pass ``pin_memory=True`` to the Loader and move them with
``batch = accelerate.utils.send_to_device(batch, accelerator.device, non_blocking=True)``).

Call it in the same order on every run of the script, as with
``register_for_checkpointing``: Accelerate matches saved objects to registered ones by
position. Requires ``accelerate`` (the ``frameworks`` extra); ``import epochal`` does not
import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from epochal._errors import InvalidValueError
from epochal.loader import Loader

__all__ = ["prepare"]


def prepare(accelerator: Any, *objects: Any, device_placement: Sequence[bool] | None = None) -> Any:
    """Prepare ``objects`` like ``accelerator.prepare`` and register every Loader among them.

    Args:
        accelerator: an ``accelerate.Accelerator``.
        *objects: what you would pass to ``accelerator.prepare`` (models, optimizers,
            schedulers, DataLoaders), and epochal Loaders in any position.
        device_placement: as for ``accelerator.prepare``, one flag per object (a Loader's
            flag is ignored: its batches stay where its collate puts them).

    Returns:
        The prepared objects in the order given (each Loader as itself), or the one
        object when one was given, as ``accelerator.prepare`` returns them.

    Raises:
        ValueError: ``device_placement`` does not have one flag per object.
    """
    if device_placement is not None and len(device_placement) != len(objects):
        raise InvalidValueError(
            f"device_placement has {len(device_placement)} flags for {len(objects)} "
            f"objects; give one flag per object (or none)"
        )
    others = [i for i, obj in enumerate(objects) if not isinstance(obj, Loader)]
    result = list(objects)
    if others:
        placement = None if device_placement is None else [device_placement[i] for i in others]
        prepared = accelerator.prepare(*(objects[i] for i in others), device_placement=placement)
        # accelerator.prepare returns a bare object, not a 1-tuple, for one argument
        prepared = (prepared,) if len(others) == 1 else tuple(prepared)
        for i, obj in zip(others, prepared, strict=True):
            result[i] = obj
    registered = getattr(accelerator, "_custom_objects", ())
    for obj in objects:
        # a second prepare() of the same Loader must not register it twice: load_state
        # refuses a checkpoint whose count of custom objects differs from the registered
        if isinstance(obj, Loader) and not any(obj is r for r in registered):
            accelerator.register_for_checkpointing(obj)
    return result[0] if len(result) == 1 else tuple(result)
