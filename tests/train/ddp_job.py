"""A training job for the multi-process tests: trains, then saves this rank's final weights.

Run as ``torchrun --nproc_per_node 2 tests/train/ddp_job.py CONFIG [--flags]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from epochal.train.config import RunConfig, parse
from epochal.train.distributed import get_rank, unwrap_model
from epochal.train.logging import setup_logging
from epochal.train.run import build

if __name__ == "__main__":
    config = parse(RunConfig, sys.argv[1:], prog="ddp_job")
    setup_logging(config.run_dir)
    job = build(config)
    job.trainer.fit()
    state = unwrap_model(job.model).state_dict()
    torch.save(state, Path(config.run_dir) / f"final-rank{get_rank()}.pt")
    torch.distributed.destroy_process_group()
