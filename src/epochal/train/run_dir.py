"""The run directory: what a new run may resume, and what starting over deletes.

A run directory holds one run: its checkpoints, ``config.json``, logs and events.
:func:`check_run_dir` compares a new configuration with the one saved there before
anything is written, so a command that cannot resume the run refuses and changes nothing;
:func:`clear_run_dir` (``--fresh``) removes what a run left and nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from epochal._errors import UsageError
from epochal.train.config import RunConfig, to_dict

__all__ = ["RESUMABLE_CHANGES", "check_run_dir", "clear_run_dir"]

# Settings a resumed run may change: none of them changes what a checkpoint holds or what
# the next step computes (a new epochs/max_steps trains shorter or longer; the per-rank
# batch size changes with the world size in an elastic resume, and the Loader's own state
# check refuses a global batch it cannot continue). Any other difference from the run
# directory's config.json refuses the resume.
RESUMABLE_CHANGES = frozenset(
    {
        "data.batch_size",
        "data.num_workers",
        "device",
        "fresh",
        "run_dir",
        "trainer.async_save",
        "trainer.checkpoint_every",
        "trainer.epochs",
        "trainer.eval_every",
        "trainer.keep_best",
        "trainer.keep_last",
        "trainer.log_every",
        "trainer.max_steps",
        "trainer.progress",
        "trainer.record_order",
    }
)
# what a run leaves in its run directory (``clear_run_dir`` removes these and nothing else)
_RUN_FILES = ("checkpoints", "config.json", "hparams.json", "metrics.jsonl", "train.log")
_RUN_GLOBS = (".writer.lock", "events.out.tfevents.*", "order-rank*.jsonl")


def check_run_dir(config: RunConfig, *, flag: str = "--fresh") -> int | None:
    """Refuse a run directory that ``config`` cannot use, before anything is written.

    Args:
        config: The new run's configuration.
        flag: The command-line flag that starts over (named in the message).

    Returns:
        The step of the directory's newest checkpoint (None when there is none, or with
        ``config.fresh``).

    Raises:
        UsageError: ``run_dir`` is a file, or it holds checkpoints of a run whose saved
            config differs from ``config`` in a field outside :data:`RESUMABLE_CHANGES`
            (the message lists each field, saved and new value).
    """
    from epochal.train.checkpoint import Checkpointer  # torch: only when a check needs it

    run_dir = Path(config.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(
            f"run dir {str(run_dir)!r} is a file; give --run-dir a directory (created if missing)"
        )
    if config.fresh:
        return None
    checkpointer = Checkpointer(run_dir / "checkpoints")
    steps = checkpointer.steps()
    if not steps:
        return None
    saved = _saved_config(run_dir, checkpointer)
    if saved is None:
        return steps[-1]
    changed = _differences(saved, to_dict(config))
    if changed:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed[:6])
        more = f"; and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise UsageError(
            f"run dir {str(run_dir)!r} holds a run (step {steps[-1]}) with other settings "
            f"(saved -> given): {shown}{more}. Resume it with its own settings, give another "
            f"--run-dir, or add {flag} to delete that run and start over"
        )
    return steps[-1]


def clear_run_dir(run_dir: str | Path, *, extra: tuple[str, ...] = ()) -> None:
    """Delete what a run left in ``run_dir`` (checkpoints, logs, events, config.json).

    Other files in the directory stay. ``extra`` names more entries to delete (the demo's
    ``data``). Call it on one process only.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    doomed = [run_dir / name for name in (*_RUN_FILES, *extra)]
    doomed += [path for pattern in _RUN_GLOBS for path in run_dir.glob(pattern)]
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _saved_config(run_dir: Path, checkpointer: Any) -> dict[str, Any] | None:
    """The config of the run in ``run_dir``: its config.json, else its newest checkpoint's."""
    path = run_dir / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        payload = checkpointer.read()
        saved = None if payload is None else payload.get("config")
    return saved if isinstance(saved, dict) else None


def _differences(saved: dict[str, Any], given: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, given value) for every field outside RESUMABLE_CHANGES."""
    old, new = _flatten(saved), _flatten(given)
    missing = object()
    rows = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if key in RESUMABLE_CHANGES or a == b:
            continue
        rows.append((key, "(absent)" if a is missing else a, "(absent)" if b is missing else b))
    return rows


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
