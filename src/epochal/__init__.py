"""epochal: random-access training data and exactly resumable runs for PyTorch.

Public names are imported lazily on first use, so ``import epochal`` stays fast and does
not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from epochal._errors import Error, StateError

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "CheckpointSaveError": "epochal.train.checkpoint",
    "CheckpointWarning": "epochal.train.checkpoint",
    "Checkpointer": "epochal.train.checkpoint",
    "CorruptStoreError": "epochal.store",
    "DataConfig": "epochal.train.config",
    "IdentityOrder": "epochal.order",
    "Loader": "epochal.loader",
    "MeanMetrics": "epochal.train.distributed",
    "Mixture": "epochal.mixture",
    "ModelConfig": "epochal.train.config",
    "OptimConfig": "epochal.train.config",
    "Plan": "epochal.plan",
    "RunConfig": "epochal.train.config",
    "Sampler": "epochal.sampling",
    "ShuffledOrder": "epochal.order",
    "Source": "epochal.sources",
    "StoreError": "epochal.store",
    "StoreSource": "epochal.store",
    "TokenSource": "epochal.token_windows",
    "Trainer": "epochal.train.trainer",
    "TrainerConfig": "epochal.train.config",
    "WeightedSampler": "epochal.sampling",
    "balanced": "epochal.sampling",
    "concat": "epochal.sources",
    "decode_image": "epochal.images",
    "from_arrays": "epochal.sources",
    "from_dataset": "epochal.sources",
    "init_distributed": "epochal.train.distributed",
    "load_model_state": "epochal.train.checkpoint",
    "make_order": "epochal.order",
    "merge": "epochal.store",
    "mix": "epochal.mixture",
    "open": "epochal.store",
    "sample_rng": "epochal.rng",
    "seed_everything": "epochal.train.seeding",
    "split": "epochal.sources",
    "subset": "epochal.sources",
    "tokens": "epochal.token_windows",
    "verify": "epochal.store",
    "warmup_schedule": "epochal.train.trainer",
    "wrap_model": "epochal.train.distributed",
    "write": "epochal.store",
}

__all__ = [
    "CheckpointSaveError",
    "CheckpointWarning",
    "Checkpointer",
    "CorruptStoreError",
    "DataConfig",
    "Error",
    "IdentityOrder",
    "Loader",
    "MeanMetrics",
    "Mixture",
    "ModelConfig",
    "OptimConfig",
    "Plan",
    "RunConfig",
    "Sampler",
    "ShuffledOrder",
    "Source",
    "StateError",
    "StoreError",
    "StoreSource",
    "TokenSource",
    "Trainer",
    "TrainerConfig",
    "WeightedSampler",
    "__version__",
    "balanced",
    "concat",
    "decode_image",
    "from_arrays",
    "from_dataset",
    "init_distributed",
    "load_model_state",
    "make_order",
    "merge",
    "mix",
    "open",
    "sample_rng",
    "seed_everything",
    "split",
    "subset",
    "tokens",
    "verify",
    "warmup_schedule",
    "wrap_model",
    "write",
]

if TYPE_CHECKING:
    from epochal.images import decode_image
    from epochal.loader import Loader
    from epochal.mixture import Mixture, mix
    from epochal.order import IdentityOrder, ShuffledOrder, make_order
    from epochal.plan import Plan
    from epochal.rng import sample_rng
    from epochal.sampling import Sampler, WeightedSampler, balanced
    from epochal.sources import Source, concat, from_arrays, from_dataset, split, subset
    from epochal.store import CorruptStoreError, StoreError, StoreSource, merge, open, verify, write
    from epochal.token_windows import TokenSource, tokens
    from epochal.train.checkpoint import (
        Checkpointer,
        CheckpointSaveError,
        CheckpointWarning,
        load_model_state,
    )
    from epochal.train.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainerConfig
    from epochal.train.distributed import MeanMetrics, init_distributed, wrap_model
    from epochal.train.seeding import seed_everything
    from epochal.train.trainer import Trainer, warmup_schedule


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'epochal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
