"""Run logging on rank 0: TensorBoard, metrics.jsonl, a progress bar and python logging (P11).

:class:`RunLogger` owns the run directory's event stream. It writes scalars to TensorBoard
(``torch.utils.tensorboard``, from the ``train`` extra) and, always, one JSON line per
step to ``metrics.jsonl``; at the end it records the hyper-parameters with the final
metrics. Only rank 0 writes, and a lock file makes a second writer on the same run
directory (another process, or a second logger in this one) an error instead of a
corrupt event file. On resume, events after the restored step are dropped from both, so
the curves of a killed-and-resumed run have no duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from epochal._errors import Error
from epochal.train.distributed import get_rank, is_main_process

__all__ = ["RunLogger", "progress_bar", "setup_logging"]

LOGGER_NAME = "epochal"
_LOCK_NAME = ".writer.lock"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"

log = logging.getLogger(LOGGER_NAME)


def setup_logging(
    run_dir: str | Path | None = None, *, level: int = logging.INFO
) -> logging.Logger:
    """Send the ``epochal`` logger to the console and (rank 0) to ``run_dir/train.log``.

    Ranks other than 0 log warnings and errors only, prefixed with their rank. Calling it
    again replaces the handlers it added before (safe in tests and notebooks).
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if getattr(h, "_epochal", False)]:
        logger.removeHandler(handler)
        handler.close()
    rank = get_rank()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_FORMAT if rank == 0 else f"[rank {rank}] {_FORMAT}"))
    console.setLevel(level if rank == 0 else logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if run_dir is not None and rank == 0:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(Path(run_dir) / "train.log")
        file.setFormatter(logging.Formatter(_FORMAT))
        file.setLevel(level)
        handlers.append(file)
    for handler in handlers:
        handler._epochal = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def progress_bar(total: int, *, initial: int = 0, desc: str = "train", enabled: bool = True) -> Any:
    """A tqdm bar on rank 0 (disabled elsewhere, or when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        disable=not (enabled and is_main_process()),
    )


class RunLogger:
    """Scalars and hyper-parameters of one run, written by rank 0 only.

    Args:
        run_dir: The run directory; events go to it directly (one writer per directory).
        resume_step: The step a resumed run continues from: records of later steps left by
            the interrupted run are dropped (TensorBoard ``purge_step``, metrics.jsonl
            truncated). 0 for a fresh run.
        tensorboard: Write TensorBoard events (needs the ``tensorboard`` package; without it
            one log line says so and metrics.jsonl is still written).
    """

    def __init__(
        self, run_dir: str | Path, *, resume_step: int = 0, tensorboard: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = is_main_process()
        self._writer: Any = None
        self._lock: Any = None
        self._jsonl: Any = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.run_dir / _LOCK_NAME)
        path = self.run_dir / "metrics.jsonl"
        _truncate_jsonl(path, resume_step)
        self._jsonl = open(path, "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info(
                    "TensorBoard logging is off: pip install 'epochal[train]' to get it "
                    "(metrics still go to %s)",
                    path,
                )
            else:
                purge = resume_step + 1 if resume_step > 0 else None
                self._writer = SummaryWriter(str(self.run_dir), purge_step=purge)

    @property
    def tensorboard(self) -> bool:
        """True when TensorBoard events are being written."""
        return self._writer is not None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Record scalars (e.g. ``{"train/loss": 0.3}``) at ``step``."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record the run's hyper-parameters with its final metrics (TensorBoard's HPARAMS tab).

        Nested dicts (a config's ``to_dict``) are flattened to dotted keys.
        """
        if not self.enabled:
            return
        flat = {k: _hparam_value(v) for k, v in _flatten(hparams).items()}
        final = {k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}
        (self.run_dir / "hparams.json").write_text(
            json.dumps({"hparams": flat, "metrics": final}, indent=2) + "\n"
        )
        if self._writer is not None:
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            # written through this run's own writer: add_hparams() would open a second one
            for summary in hparams_summary(flat, final):
                self._writer.file_writer.add_summary(summary)
            for key, value in final.items():
                self._writer.add_scalar(key, value)

    def close(self) -> None:
        """Flush and close everything (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(path: Path) -> Any:
    f = open(path, "a")  # noqa: SIM115 (held open: the lock lives as long as the file)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the rank-0 rule still holds
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        f.close()
        raise Error(
            f"another writer is logging to {path.parent} (lock {path.name} is held); "
            f"two TensorBoard writers on one directory corrupt its event files: use another "
            f"run_dir or stop the other run"
        ) from err
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _truncate_jsonl(path: Path, resume_step: int) -> None:
    if not path.exists():
        return
    if resume_step == 0:
        path.unlink()
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= resume_step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    path.write_text("".join(line + "\n" for line in keep))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _hparam_value(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else str(value)
