"""Shared helpers of the store tests: a record with every column type, and comparisons."""

from __future__ import annotations

from typing import Any

import numpy as np


def make_record(i: int) -> dict[str, Any]:
    """Record ``i`` with one column of every kind the store holds (deterministic in ``i``)."""
    rng = np.random.default_rng(i)
    return {
        "image": rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8),
        "embedding": rng.standard_normal(6).astype(np.float32),
        "half": rng.standard_normal((2, 2)).astype(np.float16),
        "mask": rng.integers(0, 2, size=3).astype(bool),
        "phase": rng.standard_normal(2).astype(np.complex64) * 1j,
        "label": i,
        "score": i / 7,
        "flag": i % 3 == 0,
        "small": np.int16(-i),
        "raw": rng.bytes(int(rng.integers(0, 40))),
        "text": f"record {i} é" * (i % 4),
    }


def assert_record_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        if isinstance(value, np.ndarray):
            assert isinstance(got[name], np.ndarray), name
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:
            assert got[name] == value, (name, got[name], value)
            if isinstance(value, (bytes, str)):
                assert type(got[name]) is type(value), name


def assert_columns_equal(cols: dict[str, Any], indices: np.ndarray) -> None:
    """``cols`` (a get_columns result) holds exactly records ``indices``."""
    for name, col in cols.items():
        assert len(col) == len(indices), name
        want = [make_record(int(i))[name] for i in indices]
        if isinstance(want[0], (bytes, str)):
            assert col == want, name
        else:
            assert isinstance(col, np.ndarray), name
            np.testing.assert_array_equal(
                col, np.stack([np.asarray(w) for w in want]), err_msg=name
            )
