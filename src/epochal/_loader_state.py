"""The Loader's state: its keys, its version, and the checks a load makes before it moves.

The contract itself (what the state holds, what a load guarantees) is written in
:class:`epochal.Loader`'s docstring; this module keeps the keys and refuses a state that
does not fit, saying exactly what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from epochal._errors import StateError

__all__ = ["SAMPLER_KEY", "STATE_KEYS", "STATE_VERSION", "WINDOWS_KEY", "check_state"]

STATE_VERSION = 1
STATE_KEYS = (
    "version",
    "seed",
    "epoch",
    "position",
    "num_records",
    "fingerprint",
    "world_size",
    "global_batch_size",
    "shuffle",
    "drop_last",
    "windows",
)
WINDOWS_KEY = "windows"  # the current epoch's windowed-order layout, None for the plain order
SAMPLER_KEY = "sampler"  # only in the states of loaders with a sampler: its identity


def check_state(state: Any, *, mine: Mapping[str, Any], samples_per_epoch: int) -> tuple[int, int]:
    """``(epoch, position)`` of ``state``, once it is known to fit this loader.

    Args:
        state: what ``Loader.state_dict()`` returned, possibly on another topology.
        mine: this loader's values of the keys a state must match (``num_records``,
            ``fingerprint``, ``seed``, ``shuffle`` and, with a sampler, ``sampler``).
        samples_per_epoch: positions per epoch, the largest valid ``position``.

    Raises:
        StateError: the state is malformed, from a newer version, or was taken on
            another dataset, seed, shuffle setting or sampler.
    """
    if not isinstance(state, Mapping):
        raise StateError(f"a Loader state must be a dict, got {type(state).__name__}")
    keys = (*STATE_KEYS, SAMPLER_KEY) if SAMPLER_KEY in mine else STATE_KEYS
    # a state without "windows" predates windowed orders: it is a plain-order state
    missing = [key for key in keys if key not in state and key != WINDOWS_KEY]
    unknown = sorted(set(state) - set(keys))
    if missing or unknown:
        hint = ""
        if SAMPLER_KEY in missing or SAMPLER_KEY in unknown:
            hint = "; a state with a sampler only loads into a loader with the same sampler"
        raise StateError(
            f"Loader state has missing keys {missing} and unknown keys {unknown}; "
            f"expected exactly {list(keys)}{hint}"
        )
    version = state["version"]
    if version != STATE_VERSION:
        newer = isinstance(version, int) and version > STATE_VERSION
        hint = "it comes from a newer epochal: upgrade" if newer else "it is damaged"
        raise StateError(
            f"Loader state version {version!r} is not supported (this epochal reads "
            f"version {STATE_VERSION}); {hint}"
        )
    for key, value in mine.items():
        if state[key] != value:
            raise StateError(
                f"Loader state was taken with {key}={state[key]!r} but this loader has "
                f"{key}={value!r}: it belongs to another dataset or run"
            )
    epoch, position = state["epoch"], state["position"]
    if not isinstance(epoch, int) or epoch < 0:
        raise StateError(f"Loader state has an invalid epoch {epoch!r}; expected an integer >= 0")
    if not isinstance(position, int) or not 0 <= position <= samples_per_epoch:
        raise StateError(
            f"Loader state has position {position!r}; expected an integer in "
            f"[0, {samples_per_epoch}]"
        )
    return epoch, position
