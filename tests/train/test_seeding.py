"""seed_everything and the RNG-state capture the Checkpointer relies on (P8)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from epochal._errors import Error, SeedError
from epochal.train.seeding import preserved_rng_states, rng_states, seed_everything, set_rng_states


def _draws() -> tuple[float, float, float, list[float]]:
    return (
        random.random(),
        float(np.random.rand()),
        float(np.random.randn()),
        torch.rand(4).tolist(),
    )


def test_seed_everything_makes_every_global_rng_repeat() -> None:
    """P8: python random, numpy's global RNG and torch all follow the seed."""
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    seed_everything(124)
    assert _draws() != first


@pytest.mark.parametrize("seed", [-1, 2**64, 1.0, True, "3"])
def test_seed_out_of_range_is_rejected(seed: object) -> None:
    # the one seed rule: the Loader's range, the Loader's error
    with pytest.raises(SeedError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        seed_everything(seed)  # type: ignore[arg-type]
    assert issubclass(SeedError, Error) and issubclass(SeedError, ValueError)


def test_every_seed_the_loader_takes_seeds_everything_reproducibly() -> None:
    """Seeds past numpy's 2**32 work (``epochal train --seed`` takes what the Loader takes),
    and the generators depend on all 64 bits: seed 2**32 is not seed 0."""
    draws = {}
    for seed in (0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 1):
        seed_everything(seed)
        first = _draws()
        seed_everything(seed)
        assert _draws() == first
        draws[seed] = first
    for position in range(3):  # python random, numpy, torch each differ between seeds
        assert len({d[position] if position < 2 else d[3][0] for d in draws.values()}) == 7
    seed_everything(2**32)
    assert random.random() != float(np.random.rand())  # numpy's stream is not python's


def test_deterministic_turns_on_deterministic_algorithms() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before)


def test_rng_states_round_trip_through_a_weights_only_torch_load() -> None:
    """The captured states are plain data: they survive torch.save/torch.load(weights_only=True)."""
    seed_everything(5)
    np.random.randn()  # leave a cached gaussian in numpy's state
    buffer = io.BytesIO()
    torch.save(rng_states(), buffer)
    expected = _draws()
    _draws()
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True))
    assert _draws() == expected


def test_preserved_rng_states_undoes_draws_inside_the_block() -> None:
    seed_everything(9)
    with preserved_rng_states():
        _draws()
    after = _draws()
    seed_everything(9)
    assert _draws() == after
