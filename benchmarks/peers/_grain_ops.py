"""Grain operations; a module of their own because they subclass Grain's classes."""

from __future__ import annotations

from typing import Any

import grain
from _systems_peers import _parse

__all__ = ["GrainParse"]


class GrainParse(grain.transforms.Map):
    """ArrayRecord bytes -> ``{"data", "label"}`` (module level: workers unpickle it)."""

    def __init__(self, fixed: bool) -> None:
        self.fixed = fixed

    def map(self, element: bytes) -> dict[str, Any]:
        return _parse(self.fixed, element)
