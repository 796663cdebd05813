"""Per-process values: what a forked DataLoader worker (or an unpickled copy) must rebuild.

Sources are used after ``fork``: memory maps, address views and fsspec filesystems (event
loops, connections) made in one process are wrong or unsafe in another. The rule is one
helper instead of a ``pid`` check per class: :class:`PerProcess` builds its value lazily,
once per process, and never pickles it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class PerProcess(Generic[T]):
    """``get()`` is ``build()``'s value, built once in each process that asks for it.

    Args:
        build: makes the value; called again in every new process (after ``fork`` or
            unpickling).
        value: a value already built in this process, used until the process changes.
    """

    def __init__(self, build: Callable[[], T], value: T | None = None) -> None:
        self._build = build
        self._value = value
        self._pid = os.getpid() if value is not None else -1

    def get(self) -> T:
        """The value of this process (built on the first call in a process)."""
        if self._pid != os.getpid():
            self._value = self._build()
            self._pid = os.getpid()
        return self._value  # type: ignore[return-value]

    def __getstate__(self) -> dict[str, Any]:
        # the value belongs to this process: a copy elsewhere builds its own
        return {"_build": self._build, "_value": None, "_pid": -1}
