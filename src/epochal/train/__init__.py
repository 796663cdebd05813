"""The training harness: Checkpointer, seeding, logging, distributed helpers, config, Trainer.

Importing this package imports torch; ``import epochal`` alone does not (its public names
from here are loaded lazily).
"""

from __future__ import annotations

from epochal.train.checkpoint import (
    Checkpointer,
    CheckpointSaveError,
    CheckpointWarning,
    load_model_state,
)
from epochal.train.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainerConfig,
    from_dict,
    parse,
    to_dict,
)
from epochal.train.distributed import (
    DistInfo,
    MeanMetrics,
    init_distributed,
    is_main_process,
    unwrap_model,
    wrap_model,
)
from epochal.train.logging import RunLogger, setup_logging
from epochal.train.seeding import rng_states, seed_everything, set_rng_states
from epochal.train.trainer import Trainer, warmup_schedule

__all__ = [
    "CheckpointSaveError",
    "CheckpointWarning",
    "Checkpointer",
    "DataConfig",
    "DistInfo",
    "MeanMetrics",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "RunLogger",
    "Trainer",
    "TrainerConfig",
    "from_dict",
    "init_distributed",
    "is_main_process",
    "load_model_state",
    "parse",
    "rng_states",
    "seed_everything",
    "set_rng_states",
    "setup_logging",
    "to_dict",
    "unwrap_model",
    "warmup_schedule",
    "wrap_model",
]
