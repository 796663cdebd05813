"""Deterministic pause points for fault-injection tests (``verify-resume`` and the test suite).

A test sets ``EPOCHAL_PAUSE_AT=KIND:STEP:MARKER`` in a training subprocess's environment.
When that process reaches the pause point ``KIND`` at optimizer step ``STEP`` it creates
the file ``MARKER`` and sleeps, so the test can SIGKILL it at exactly that point:

- ``step``: right after optimizer step STEP, before any checkpoint of that step;
- ``write``: while saving the checkpoint of step STEP, after its temporary file has been
  written and fsynced but before it replaces anything;
- ``queued``: in the background thread of an asynchronous save of step STEP, after
  ``save()`` has taken its snapshot (and may have returned) but before anything is written.

Unset (the normal case), the pause points cost one dictionary lookup at import.
"""

from __future__ import annotations

import os
import time

__all__ = ["PAUSE_ENV", "pause_point"]

PAUSE_ENV = "EPOCHAL_PAUSE_AT"
_MAX_PAUSE_S = 600.0  # a test that forgets to kill the paused process does not hang forever

_spec = os.environ.get(PAUSE_ENV)


def pause_point(kind: str, step: int) -> None:
    """Pause here (until killed, at most 10 minutes) if ``EPOCHAL_PAUSE_AT`` names this point."""
    if _spec is None:
        return
    want_kind, want_step, marker = _spec.split(":", 2)
    if want_kind != kind or int(want_step) != step:
        return
    with open(marker, "w") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(_MAX_PAUSE_S)
