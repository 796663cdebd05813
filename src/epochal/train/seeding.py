"""Seeding and capturing the global random number generators (P8).

``seed_everything`` seeds python ``random``, numpy's global RNG and torch (CPU and every
CUDA device) and can turn on deterministic algorithms. ``rng_states`` /
``set_rng_states`` capture and restore all of those states as plain data, which is how the
Checkpointer makes a resumed run draw exactly the random numbers the uninterrupted run
would have drawn.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from epochal._keys import check_seed, splitmix64

__all__ = ["preserved_rng_states", "rng_states", "seed_everything", "set_rng_states"]

_CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic GEMMs on CUDA >= 10.2


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python ``random``, numpy's global RNG and torch on the CPU and every CUDA device.

    Args:
        seed: An integer in ``[0, 2**64)``, the range of every seed in epochal.
        deterministic: Also make torch use deterministic algorithms only (an error is raised
            by torch for an operation that has none), turn off cuDNN autotuning, and set
            ``CUBLAS_WORKSPACE_CONFIG`` unless the environment already sets it.

    Raises:
        epochal.SeedError: ``seed`` is not an integer in ``[0, 2**64)``.
    """
    seed = check_seed(seed)
    random.seed(seed)
    if seed < 1 << 32:  # what these generators always got
        np.random.seed(seed)
        torch.manual_seed(seed)  # seeds every CUDA device too
    else:
        # numpy's global RNG takes 32-bit words and torch's CPU generator keeps only the
        # low 32 bits; a hash of the seed makes both depend on all 64 bits (seed 2**32
        # is not seed 0) and keeps numpy's words unlike python's (its words of ``seed``)
        wide = splitmix64(seed)
        np.random.seed([wide & 0xFFFFFFFF, wide >> 32])
        torch.manual_seed(wide)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_states() -> dict[str, Any]:
    """The states of every global RNG as plain data (tensors, ints, lists; no numpy objects).

    The result loads with ``torch.load(..., weights_only=True)``.
    """
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the global RNG states captured by :func:`rng_states`.

    CUDA states are restored device by device; if this machine has another number of CUDA
    devices than the one that captured them, a warning says so and the CUDA RNGs are left alone.
    """
    py = states["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npy = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda) == devices:
        if devices:
            torch.cuda.set_rng_state_all(cuda)
    else:
        warnings.warn(
            f"the checkpoint holds RNG states for {len(cuda)} CUDA device(s) but this process "
            f"sees {devices}; CUDA RNG states were not restored, so the run is not bitwise "
            f"reproducible from here",
            stacklevel=2,
        )


@contextlib.contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Run the block and then put every global RNG back as it was (e.g. around evaluation)."""
    saved = rng_states()
    try:
        yield
    finally:
        set_rng_states(saved)
