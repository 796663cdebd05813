"""SIGINT / SIGTERM during a training command: stop after the step, save, say where to resume.

While a Trainer is watched, the first signal asks it to stop after its optimizer step (it
saves a checkpoint there and raises RunInterrupted); a signal before that, or a second
one, stops at once with a RunInterrupted naming the last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from epochal._errors import RunInterrupted

__all__ = ["stop_on_signals", "stopped_at_once"]


@contextlib.contextmanager
def stop_on_signals(run_dir: str | Path) -> Iterator[Any]:
    """SIGINT/SIGTERM: while a trainer is watched, ask it to stop after its step (it saves
    and raises RunInterrupted); before that, or on a second signal, stop at once with a
    RunInterrupted that names the last checkpoint. Yields ``watch(trainer)``."""
    watched: list[Any] = []  # the Trainer

    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if watched and watched[0].stop_signal is None:
            watched[0].request_stop(signum)
            os.write(
                2,
                f"\nepochal: {name}: stopping after this step and saving a checkpoint "
                f"(send {name} again to stop at once)\n".encode(),
            )
            return
        raise RunInterrupted(stopped_at_once(name, run_dir), exit_code=128 + signum)

    def watch(trainer: Any) -> None:
        trainer.watch_stop = True
        watched.append(trainer)

    if threading.current_thread() is not threading.main_thread():
        yield watch  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield watch
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stopped_at_once(name: str, run_dir: str | Path) -> str:
    from epochal.train.checkpoint import Checkpointer

    checkpoints = Path(run_dir) / "checkpoints"
    steps = Checkpointer(checkpoints).steps()
    if not steps:
        return f"stopped by {name}; no checkpoint yet in {checkpoints}: the same command starts the run again"
    return (
        f"stopped by {name}; the last checkpoint is step {steps[-1]} in {checkpoints}: "
        f"the same command again resumes from step {steps[-1]}"
    )
