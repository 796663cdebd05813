"""Checkpointer: everything a run needs to continue, written atomically (P9, P10).

A checkpoint of step ``S`` in directory ``D`` is two files:

- ``D/step_<S>-<token>.pt``: ``torch.save`` of the payload: every component's
  ``state_dict()``, the global RNG states of every rank, the step, metrics and config;
- ``D/step_<S>.json``: the commit record: step, metrics, the name of the ``.pt`` file, its
  size and xxh3-64 checksum.

Both are written to a temporary file in ``D``, flushed and fsynced, then moved into place
with ``os.replace`` (and the directory fsynced); the ``.json`` goes last, so a checkpoint
exists exactly when its commit record does and the file it names has that size and
checksum. Old checkpoints are pruned only after the new one is committed, so a kill at any
instant (even with ``keep_last=1``) leaves the previous good checkpoint loadable.

With ``async_save=True``, ``save`` only takes a snapshot of the state in CPU memory and
returns; one background thread then writes it by the same protocol (see ``Checkpointer``).

Layout: this module decides what a checkpoint holds, which rank writes and reads it, and
what to keep; the atomic writes and commit-record checks are ``_checkpoint_files``, the
in-memory snapshot and its writer thread ``_async_save``.
"""

from __future__ import annotations

import atexit
import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import xxhash
from torch import nn

from epochal._errors import InvalidTypeError, InvalidValueError, StateError
from epochal.train._async_save import PendingSave, snapshot
from epochal.train._checkpoint_files import (
    _COMMIT,
    _PAYLOAD,
    _TEMP_PREFIX,
    FORMAT,
    VERSION,
    CheckpointSaveError,
    _atomic_write,
    _atomic_write_json,
    _commit_problem,
    _fsync_dir,
)
from epochal.train._faults import pause_point
from epochal.train.distributed import get_rank, get_world_size, unwrap_model
from epochal.train.seeding import rng_states, set_rng_states

__all__ = ["CheckpointSaveError", "CheckpointWarning", "Checkpointer", "load_model_state"]

_CHUNK = 8 << 20  # bytes per read when verifying a checksum
_PREFIX = "module."  # what DataParallel / DistributedDataParallel put before every key


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (incomplete or corrupt) or restored only in part."""


class Checkpointer:
    """Saves and restores every stateful object of a training run, atomically.

    Args:
        directory: Where the checkpoints live (created on the first save).
        keep_last: How many of the newest checkpoints to keep (None keeps all).
        keep_best: ``(metric, "min" | "max")``: also keep the checkpoint with the best value of
            ``metric`` among those saved with it.
        config: The run's configuration (a dataclass or a plain dict), stored in every
            checkpoint as a plain dict and returned by :meth:`restore` as ``meta["config"]``.
        weights_only: Load with ``torch.load(weights_only=True)`` (safe: plain data and tensors
            only). Set False for components whose state holds arbitrary Python objects.
        durable: fsync the files and the directory, so a checkpoint survives a power loss or
            kernel crash, not only a killed process. False skips the fsyncs (a save is still
            atomic against any kill of the process, since ``os.replace`` is); use it where
            fsync is very slow and the machine itself is trusted.
        async_save: Write in a background thread: :meth:`save` blocks only while it copies
            the state into CPU memory (see "Asynchronous saving" below). Default False:
            ``save`` returns once the checkpoint is committed and durable.

    Components are keyword arguments of :meth:`save` and :meth:`restore`: anything with
    ``state_dict()`` and ``load_state_dict()`` (model, optimizer, LR scheduler, GradScaler,
    ``epochal.Loader``, your own objects). Models are saved unwrapped from DDP /
    DataParallel / ``torch.compile``, and load into wrapped or bare models alike.
    The global RNG states of python, numpy, torch CPU and every CUDA device are saved for
    every rank and restored last, after all components. Under torch.distributed every rank
    calls ``save`` (it gathers the ranks' RNG states), rank 0 writes; every rank restores.

    State contract (payload version 1): ``format``, ``version``, ``step``, ``time``,
    ``metrics``, ``config``, ``world_size``, ``components`` (name -> state dict) and ``rng``
    (one :func:`~epochal.train.seeding.rng_states` dict per rank). A new key or a changed
    meaning raises the version; :meth:`restore` refuses another version, a checkpoint
    without a component it is asked for, and any file whose size or checksum differs
    from its commit record. A successful restore puts every component and every RNG back
    exactly as they were when ``save`` was called.

    Asynchronous saving (``async_save=True``): ``save`` captures, at the instant it is
    called, every component's ``state_dict()`` deep-copied into CPU memory (tensors cloned,
    storage sharing kept), the RNG states, the step, metrics and the time, and returns at
    once; training may then mutate the model and optimizer freely. One background thread
    serialises that snapshot and writes it by the same protocol (temporary file, fsync,
    ``os.replace``, commit record, directory fsync, pruning), so the file holds exactly
    what a synchronous ``save`` at that instant would have written (CUDA tensors come back
    on the CPU, as ``restore`` loads them by default). At most one save is in flight: the
    next :meth:`save`, :meth:`restore`, :meth:`read`, :meth:`steps`, :attr:`best_step`,
    :meth:`wait` and :meth:`close` first wait for it, and if the background write failed
    they raise :class:`CheckpointSaveError` naming the file (the previous checkpoints are
    untouched). Use the Checkpointer as a context manager, or call :meth:`close` at the end,
    to be sure the last checkpoint is durable; an atexit hook also waits for it and reports
    a failure on stderr. A kill during a background write leaves the previous checkpoint
    loadable, as with a synchronous save. The snapshot costs one extra copy of the state in
    CPU memory while a save is in flight. Under torch.distributed the ranks do not meet in
    a barrier after an asynchronous save; rank 0 alone waits for its write.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int | None = 3,
        keep_best: tuple[str, str] | None = None,
        config: Any = None,
        weights_only: bool = True,
        durable: bool = True,
        async_save: bool = False,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise InvalidValueError(f"keep_last must be >= 1 or None (keep all), got {keep_last}")
        if keep_best is not None and (len(keep_best) != 2 or keep_best[1] not in ("min", "max")):
            raise InvalidValueError(
                f"keep_best must be (metric, 'min') or (metric, 'max'), got {keep_best!r}"
            )
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.keep_best = tuple(keep_best) if keep_best is not None else None
        self.config = _config_dict(config)
        self.weights_only = weights_only
        self.durable = durable
        self.async_save = async_save
        self._pending: PendingSave | None = None
        self._cleaned = False  # leftovers of killed saves removed (once, on first use)

    # -- saving -------------------------------------------------------------------------

    def save(
        self, step: int, *, metrics: Mapping[str, float] | None = None, **components: Any
    ) -> Path | None:
        """Save a checkpoint of ``step`` holding every component, then prune old ones.

        Args:
            step: The training step (optimizer updates so far); names the checkpoint.
            metrics: Scalars stored with it (``keep_best`` reads its metric from here).
            **components: Objects with ``state_dict()``, saved under their keyword.

        Returns:
            The path of the ``.pt`` file on rank 0 (with ``async_save``, the path it will have
            once the background write is done); None on the other ranks.

        Raises:
            CheckpointSaveError: The previous asynchronous save failed (nothing new is saved).
        """
        if step < 0:
            raise InvalidValueError(f"step must be >= 0, got {step}")
        self.wait()
        self._clean_leftovers()
        states = {name: _state_of(name, obj) for name, obj in components.items()}
        rng = _gather(rng_states())
        if get_rank() != 0:
            if not self.async_save:
                _barrier()
            return None
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "time": time.time(),
            "metrics": metrics,
            "config": self.config,
            "world_size": get_world_size(),
            "components": states,
            "rng": rng,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:012d}-{os.urandom(4).hex()}.pt"
        if not self.async_save:
            self._write(step, name, payload)
            _barrier()
            return self.directory / name
        frozen = snapshot(payload)  # from here on, training may mutate the originals

        def write() -> None:
            pause_point("queued", step)
            self._write(step, name, frozen)

        self._pending = PendingSave(step, self.directory / name, write)
        atexit.register(self._wait_at_exit)
        return self.directory / name

    def wait(self) -> None:
        """Block until the asynchronous save in flight (if any) is committed and durable.

        Raises:
            CheckpointSaveError: That save failed; raised once, the next call returns.
        """
        pending = self._pending
        if pending is None:
            return
        pending.thread.join()
        self._pending = None
        atexit.unregister(self._wait_at_exit)
        if pending.error is not None:
            err = pending.error
            raise CheckpointSaveError(
                f"asynchronous save of step {pending.step} to {pending.path} failed: "
                f"{type(err).__name__}: {err}; the previous checkpoints are untouched",
                pending.path,
            ) from err

    def close(self) -> None:
        """Wait for the save in flight (:meth:`wait`). The Checkpointer stays usable."""
        self.wait()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.close()
            return
        try:  # the block's own exception wins; a failed background save is reported too
            self.close()
        except CheckpointSaveError as err:
            warnings.warn(str(err), CheckpointWarning, stacklevel=2)

    def _wait_at_exit(self) -> None:
        # an uncaught error from here is printed by the interpreter, with its cause
        self.wait()

    def _write(self, step: int, name: str, payload: dict[str, Any]) -> None:
        """Write, commit and make durable the checkpoint ``name``, then prune."""
        metrics = payload["metrics"]
        size, digest = _atomic_write(
            self.directory / name, payload, pause_step=step, durable=self.durable
        )
        commit = {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "metrics": metrics,
            "file": name,
            "bytes": size,
            "xxh3_64": digest,
        }
        # the commit record goes last: only once it is in place does the checkpoint exist
        _atomic_write_json(self.directory / f"step_{step:012d}.json", commit, durable=self.durable)
        if self.durable:
            _fsync_dir(self.directory)  # both renames are durable before anything is pruned
        self._prune()

    def _prune(self) -> None:
        commits = self._commits()
        keep = (
            {step for step, _ in commits[-self.keep_last :]}
            if self.keep_last
            else {step for step, _ in commits}
        )
        if self.keep_best is not None:
            best = self._best(commits)
            if best is not None:
                keep.add(best)
        for step, _commit in commits:
            if step not in keep:
                (self.directory / f"step_{step:012d}.json").unlink(missing_ok=True)
        referenced = {commit.get("file") for step, commit in commits if step in keep}
        for path in self.directory.iterdir():
            orphan = _PAYLOAD.match(path.name) and path.name not in referenced
            if orphan or path.name.startswith(_TEMP_PREFIX):
                path.unlink(missing_ok=True)

    def _clean_leftovers(self) -> None:
        """Remove what killed saves left behind, once, before this Checkpointer's first
        restore or save (rank 0): temporary files and payloads that no commit record names,
        by the rules of ``_prune`` (commit records themselves are pruned by the next save).
        Without it a run killed during saves again and again piles up whole payloads."""
        if self._cleaned or get_rank() != 0:
            return
        self._cleaned = True
        if not self.directory.is_dir():
            return
        referenced = {c["file"] for _, c in self._commits() if "error" not in c}
        for path in self.directory.iterdir():
            orphan = _PAYLOAD.match(path.name) and path.name not in referenced
            if orphan or path.name.startswith(_TEMP_PREFIX):
                path.unlink(missing_ok=True)

    def _best(self, commits: list[tuple[int, dict[str, Any]]]) -> int | None:
        assert self.keep_best is not None
        metric, mode = self.keep_best
        scored = [
            (c["metrics"][metric], step)
            for step, c in commits
            if "error" not in c and metric in c["metrics"]
        ]
        if not scored:
            return None
        # ties go to the newest checkpoint
        return (min(scored, key=lambda t: (t[0], -t[1])) if mode == "min" else max(scored))[1]

    # -- listing ------------------------------------------------------------------------

    def _commits(self) -> list[tuple[int, dict[str, Any]]]:
        """Commit records, oldest first; an unreadable one is ``{"error": why}``."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in self.directory.iterdir():
            match = _COMMIT.match(path.name)
            if not match:
                continue
            step = int(match.group(1))
            try:
                commit = json.loads(path.read_text())
            except (OSError, ValueError, RecursionError) as err:
                commit = {"error": f"{path.name} is unreadable: {err}"}
            else:
                problem = _commit_problem(commit, step)
                if problem is not None:
                    commit = {"error": f"{path.name} is not a valid commit record: {problem}"}
            out.append((step, commit))
        return sorted(out, key=lambda item: item[0])

    def steps(self) -> list[int]:
        """Steps that have a commit record, oldest first (restore() still verifies each)."""
        self.wait()
        return [step for step, _ in self._commits()]

    @property
    def best_step(self) -> int | None:
        """The step of the best checkpoint by ``keep_best`` (None without keep_best or metric)."""
        self.wait()
        return None if self.keep_best is None else self._best(self._commits())

    # -- restoring ----------------------------------------------------------------------

    def restore(
        self, *, step: int | None = None, map_location: Any = "cpu", **components: Any
    ) -> dict[str, Any] | None:
        """Load the newest complete checkpoint (or ``step``) into the components.

        Incomplete or corrupt checkpoints (a missing or truncated file, a checksum mismatch)
        are skipped with a :class:`CheckpointWarning` naming them. Components load in the
        order given, then the RNG states of this rank are restored last.

        Args:
            step: Restore exactly this step; StateError if it is missing or corrupt.
            map_location: Passed to ``torch.load`` (state is copied into the components'
                own devices by their ``load_state_dict``).
            **components: Objects with ``load_state_dict()``, matched to the saved ones by
                keyword. A saved component you do not pass is ignored.

        Returns:
            None when there is no checkpoint, else a dict with ``step``, ``metrics``,
            ``config``, ``world_size``, ``time`` and ``path``.
        """
        self.wait()
        self._clean_leftovers()
        payload, path = self._pick(step, map_location)
        if payload is None:
            return None
        saved = payload["components"]
        missing = sorted(set(components) - set(saved))
        if missing:
            raise StateError(
                f"checkpoint {path} has no component(s) {missing}; it holds {sorted(saved)}"
            )
        for name, obj in components.items():
            if isinstance(obj, nn.Module):
                load_model_state(obj, saved[name])
            elif hasattr(obj, "load_state_dict"):
                obj.load_state_dict(saved[name])
            else:
                raise InvalidTypeError(
                    f"component {name!r} ({type(obj).__name__}) has no load_state_dict()"
                )
        rng = payload["rng"]
        set_rng_states(rng[get_rank()] if get_rank() < len(rng) else rng[0])
        return {
            "step": payload["step"],
            "metrics": payload["metrics"],
            "config": payload["config"],
            "world_size": payload["world_size"],
            "time": payload["time"],
            "path": path,
        }

    def read(self, *, step: int | None = None, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The verified payload of the newest complete checkpoint (or of ``step``), as saved.

        Nothing is loaded into any object: ``payload["components"][name]`` is each saved
        state dict, ``payload["rng"]`` the RNG states of every rank. None if there is none.
        """
        self.wait()
        chosen = self._choose(step)
        return None if chosen is None else self._load(self.directory / chosen, map_location)

    def _pick(
        self, step: int | None, map_location: Any
    ) -> tuple[dict[str, Any] | None, Path | None]:
        """Rank 0 chooses the checkpoint and tells the others, so that all ranks load one
        step; when it cannot (a missing or unusable ``step``), every rank raises its error
        instead of the others waiting for a choice that never comes."""
        chosen: str | None = None
        error: str | None = None
        if get_rank() == 0:
            try:
                chosen = self._choose(step)
            except StateError as err:
                error = str(err)
        if get_world_size() > 1:
            box = [(chosen, error)]
            dist.broadcast_object_list(box, src=0)
            chosen, error = box[0]
        if error is not None:
            raise StateError(error)
        if chosen is None:
            return None, None
        path = self.directory / chosen
        return self._load(path, map_location), path

    def _choose(self, step: int | None) -> str | None:
        commits = self._commits()
        if step is not None:
            found = [c for s, c in commits if s == step]
            if not found:
                raise StateError(
                    f"no checkpoint of step {step} in {self.directory}; saved steps: "
                    f"{[s for s, _ in commits]}"
                )
            problem = self._verify(found[0])
            if problem:
                raise StateError(f"checkpoint of step {step} is unusable: {problem}")
            return found[0]["file"]
        for s, commit in reversed(commits):
            problem = self._verify(commit)
            if problem is None:
                return commit["file"]
            warnings.warn(
                f"skipping checkpoint of step {s} in {self.directory}: {problem}",
                CheckpointWarning,
                stacklevel=4,
            )
        return None

    def _verify(self, commit: Mapping[str, Any]) -> str | None:
        """Why the checkpoint named by ``commit`` is unusable, or None when it is sound."""
        if "error" in commit:
            return str(commit["error"])
        # _commits checked the shape: "file" is a bare payload name inside the directory
        path = self.directory / commit["file"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{path.name} is missing"
        except OSError as err:
            return f"{path.name} cannot be read: {err}"
        if not path.is_file():
            return f"{path.name} is not a regular file"
        if size != commit["bytes"]:
            return f"{path.name} has {size} bytes, expected {commit['bytes']} (truncated?)"
        digest = xxhash.xxh3_64()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != commit["xxh3_64"]:
            return f"{path.name} fails its checksum (corrupt)"
        return None

    def _load(self, path: Path, map_location: Any) -> dict[str, Any]:
        try:
            payload = torch.load(path, map_location=map_location, weights_only=self.weights_only)
        except Exception as err:  # the checksum matched, so this is not corruption
            raise StateError(
                f"cannot load {path}: {err}. If a component's state holds arbitrary Python "
                f"objects, use Checkpointer(..., weights_only=False) for a trusted file"
            ) from err
        if payload.get("version") != VERSION:
            raise StateError(
                f"{path} is checkpoint format version {payload.get('version')}; this epochal "
                f"reads version {VERSION}"
            )
        return payload


def load_model_state(model: nn.Module, state: Mapping[str, Any], *, strict: bool = True) -> None:
    """``load_state_dict`` that accepts keys with or without the ``module.`` prefix (P10).

    A state dict saved from a DDP / DataParallel model loads into a bare model and a bare
    one into a wrapped model; the model may be wrapped or not.
    """
    bare = unwrap_model(model)
    keys = list(state)
    if (
        keys
        and all(k.startswith(_PREFIX) for k in keys)
        and not all(k.startswith(_PREFIX) for k in bare.state_dict())
    ):
        state = {k[len(_PREFIX) :]: v for k, v in state.items()}
    bare.load_state_dict(state, strict=strict)


def _state_of(name: str, obj: Any) -> Any:
    if isinstance(obj, nn.Module):
        return unwrap_model(obj).state_dict()
    if not hasattr(obj, "state_dict"):
        raise InvalidTypeError(
            f"component {name!r} ({type(obj).__name__}) has no state_dict(); pass objects "
            f"with state_dict()/load_state_dict(), or put plain values in config/metrics"
        )
    return obj.state_dict()


def _config_dict(config: Any) -> dict[str, Any] | None:
    if config is None or isinstance(config, dict):
        return config
    from epochal.train.config import to_dict

    return to_dict(config)


def _gather(local: Any) -> list[Any]:
    if get_world_size() == 1:
        return [local]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, local)
    return out


def _barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()
