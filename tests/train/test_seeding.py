"""seed_everything and the RNG-state capture the Checkpointer relies on (P8)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

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


def test_seed_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="2\\*\\*32"):
        seed_everything(-1)


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
