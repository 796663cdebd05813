"""The one save/restore round-trip helper every state test uses."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch


def stream(loader: Any, epochs: int) -> Iterator[Any]:
    """Batches of ``loader`` until it reaches epoch ``epochs``, passes chained."""
    while loader.epoch < epochs:
        yield from loader


def json_roundtrip(state: dict) -> dict:
    """The state as it comes back from a JSON checkpoint (catches non-JSON values)."""
    return json.loads(json.dumps(state))


def assert_batches_equal(a: Any, b: Any) -> None:
    """Bitwise equality of two batches (dicts of tensors/lists, or nested sequences)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_batches_equal(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_batches_equal(x, y)
    else:
        assert a == b


def assert_streams_equal(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b), f"{len(a)} batches vs {len(b)}"
    for x, y in zip(a, b):
        assert_batches_equal(x, y)


def run_save_load(
    make: Callable[[], Any],
    *,
    epochs: int = 2,
    cuts: list[int] | None = None,
    steps: int | None = None,
) -> None:
    """Uninterrupted run == (run to cut, save, JSON, fresh object, load, run on), per cut.

    ``make()`` builds a fresh loader in its initial state. ``cuts`` are the numbers of
    batches delivered before the save (every batch of the run when None, which covers
    the initial state and the epoch boundaries). With ``steps``, the run is
    ``loader.steps(steps)`` instead of ``epochs`` passes, and the resumed loader runs
    ``loader.steps(steps - cut)``.
    """

    def run(loader: Any, done: int) -> Iterator[Any]:
        return stream(loader, epochs) if steps is None else loader.steps(steps - done)

    reference = list(run(make(), 0))
    for cut in range(len(reference) + 1) if cuts is None else cuts:
        first = make()
        head = list(itertools.islice(run(first, 0), cut))
        state = json_roundtrip(first.state_dict())
        second = make()
        second.load_state_dict(state)
        tail = list(run(second, cut))
        assert_streams_equal(head + tail, reference)
