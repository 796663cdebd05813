"""A small Trainer for the common supervised case, resumable bit for bit.

The loop is the one people write by hand (forward, loss, backward, clip, step), with the
everyday bugs designed out (P11): gradients are zeroed after every optimizer step, only
detached losses are kept, batches are moved to the device by assignment, and logging,
TensorBoard and checkpoints happen on rank 0 only. Everything that decides the future of
the run (model, optimizer, scheduler, GradScaler, the Loader's position, every RNG state,
the step) is in each checkpoint, so a run killed at any instant and restarted on the same
``run_dir`` continues exactly as if it had never stopped. Checkpoints are written by a
background thread by default (``TrainerConfig.async_save``): the loop pauses only while
the state is copied into CPU memory, and ``fit`` returns once the last one is durable.

Users with their own loop use :class:`~epochal.train.checkpoint.Checkpointer` and
``epochal.Loader`` directly; this class is a convenience, not a framework.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from epochal._errors import InvalidTypeError, InvalidValueError, RunInterrupted
from epochal.train._faults import pause_point
from epochal.train.checkpoint import Checkpointer
from epochal.train.config import TrainerConfig, save_config
from epochal.train.distributed import (
    MeanMetrics,
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
)
from epochal.train.logging import RunLogger, progress_bar
from epochal.train.seeding import preserved_rng_states

if TYPE_CHECKING:
    from epochal.loader import Loader

__all__ = ["Trainer", "total_steps", "warmup_schedule"]

log = logging.getLogger("epochal")


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the optimizer's learning rate, then ``schedule`` down to 0.

    Args:
        optimizer: The optimizer; its current learning rates are the peaks.
        warmup_steps: Steps of linear warm-up (0 for none).
        total_steps: The last step of the run (the decay reaches 0 there).
        schedule: ``"constant"``, ``"cosine"`` or ``"linear"`` decay after warm-up.
    """
    if schedule not in ("constant", "cosine", "linear"):
        raise InvalidValueError(
            f"schedule must be 'constant', 'cosine' or 'linear', got {schedule!r}"
        )
    if warmup_steps < 0 or total_steps < 1:
        raise InvalidValueError(
            f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps} and {total_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """Train ``model`` on ``train_loader`` with checkpoints in ``run_dir``; resumes on its own.

    Args:
        model: The model, already on its device and wrapped in DDP if distributed
            (``epochal.train.distributed.wrap_model``).
        optimizer: Its optimizer.
        train_loader: An ``epochal.Loader`` over the training records (its position is
            checkpointed; build it with ``with_index=True`` to record the data order).
        run_dir: Directory for checkpoints (``run_dir/checkpoints``), logs and events.
        config: Loop settings (steps or epochs, accumulation, clipping, AMP, intervals).
        loss_fn: ``loss_fn(outputs, targets, reduction="mean" | "none")``; the default is
            ``torch.nn.functional.cross_entropy``. Evaluation needs ``reduction="none"``.
        scheduler: A per-step LR scheduler (see :func:`warmup_schedule`), or None.
        val_loader: An ``epochal.Loader`` for evaluation (``with_index=True`` so padded
            repeats are excluded), or None.
        input_key: Batch column fed to the model.
        target_key: Batch column with the targets.
        run_config: The whole run's configuration, saved in every checkpoint and as
            ``run_dir/config.json`` (default: ``config``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Loader,
        *,
        run_dir: str | Path,
        config: TrainerConfig | None = None,
        loss_fn: Callable[..., torch.Tensor] = F.cross_entropy,
        scheduler: Any = None,
        val_loader: Any = None,
        input_key: str = "image",
        target_key: str = "label",
        run_config: Any = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.scheduler = scheduler
        self.loss_fn = loss_fn
        self.config = config if config is not None else TrainerConfig()
        self.run_dir = Path(run_dir)
        self.input_key = input_key
        self.target_key = target_key
        self.run_config = run_config if run_config is not None else self.config
        self.device = next(model.parameters()).device
        self.step = 0
        self.stop_signal: int | None = None  # set by request_stop()
        # multi-process: agree on stopping every step (one tiny all-reduce), so that all
        # ranks stop after the same step; the CLI turns it on with its signal handlers
        self.watch_stop = False
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        keep_best = None
        if self.config.keep_best:
            metric, _, mode = self.config.keep_best.rpartition(":")
            keep_best = (metric, mode)
        self.checkpointer = Checkpointer(
            self.run_dir / "checkpoints",
            keep_last=self.config.keep_last,
            keep_best=keep_best,
            config=self.run_config,
            async_save=self.config.async_save,
        )

    # -- public -------------------------------------------------------------------------

    def components(self) -> dict[str, Any]:
        """Everything a checkpoint holds, by name (the RNG states are added by Checkpointer)."""
        parts: dict[str, Any] = {
            "model": self.model,
            "optimizer": self.optimizer,
            "loader": self.train_loader,
        }
        if self.scheduler is not None:
            parts["scheduler"] = self.scheduler
        if self.scaler.is_enabled():
            parts["scaler"] = self.scaler
        return parts

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Ask :meth:`fit` to stop after the optimizer step in progress (signal-handler safe).

        ``fit`` then saves a checkpoint of that step and raises
        :class:`~epochal._errors.RunInterrupted` saying where a rerun resumes. With several
        ranks, set ``watch_stop = True`` on every rank so they stop after the same step.
        """
        self.stop_signal = int(signum)

    def total_steps(self) -> int:
        """Optimizer steps of the whole run (max_steps, or epochs of the training loader)."""
        return total_steps(self.config, self.train_loader)

    def fit(self) -> dict[str, float]:
        """Restore from ``run_dir`` if it has a checkpoint, train to the end, evaluate, save.

        Returns:
            The final metrics: ``step``, ``train_loss`` (mean over the last log interval) and
            the validation metrics (``val_loss``, ``val_accuracy`` for classification).
        """
        meta = self.checkpointer.restore(**self.components())
        self.step = 0 if meta is None else int(meta["step"])
        total = self.total_steps()
        if is_main_process():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if _is_dataclass(self.run_config):
                save_config(self.run_config, self.run_dir / "config.json")
        if meta is not None:
            log.info("resumed from %s (step %d of %d)", meta["path"], self.step, total)
        order = _OrderLog(self.run_dir, self.step) if self.config.record_order else None
        logger = RunLogger(self.run_dir, resume_step=self.step)
        try:
            # on an exception, the save in flight still lands (and a failure of it is warned)
            with self.checkpointer:
                metrics = self._train(total, logger, order)
            logger.hparams(_as_dict(self.run_config), metrics)
        finally:
            logger.close()
            if order is not None:
                order.close()
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss (and accuracy, for class logits) over the whole validation set, all ranks.

        Runs on a full pass of ``val_loader`` from its start; the global RNG states are put
        back afterwards, so evaluating does not change the training run.
        """
        if self.val_loader is None:
            return {}
        metrics = MeanMetrics(self.device)
        was_training = self.model.training
        with preserved_rng_states():
            self.model.eval()
            self.val_loader.set_epoch(0)
            for batch in self.val_loader:
                inputs = batch[self.input_key].to(self.device, non_blocking=True)
                targets = batch[self.target_key].to(self.device, non_blocking=True)
                with self._autocast():
                    outputs = self.model(inputs)
                values = {"loss": self.loss_fn(outputs.float(), targets, reduction="none")}
                if outputs.ndim == 2 and not targets.is_floating_point():
                    values["accuracy"] = (outputs.argmax(dim=1) == targets).float()
                metrics.update(batch.get("_repeat"), **values)
            self.model.train(was_training)
        return {f"val_{name}": value for name, value in metrics.compute().items()}

    # -- the loop -----------------------------------------------------------------------

    def _train(self, total: int, logger: RunLogger, order: _OrderLog | None) -> dict[str, float]:
        cfg = self.config
        bar = progress_bar(total, initial=min(self.step, total), enabled=cfg.progress)
        window = _LogWindow(tick=time.perf_counter())
        last: dict[str, float] = {}
        saved_step = self.step if self.step > 0 else -1
        self.model.train()
        while self.step < total:
            # the rest of this epoch (len() is a whole epoch, as with DataLoader)
            epoch, batches = self.train_loader.epoch, batches_left(self.train_loader)
            if batches == 0:  # an epoch with nothing left: move to the next one
                self.train_loader.set_epoch(epoch + 1)
                continue
            group: list[tuple[int, dict[str, Any]]] = []
            for i, batch in enumerate(self.train_loader):
                if order is not None:
                    group.append((epoch, batch))
                if not self._accumulate(i, batch, batches, window):
                    continue  # more batches before this optimizer step
                self._step(order, group)
                group = []
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == total:
                    last["train_loss"] = self._log_train(logger, bar, window)
                evaluated = bool(cfg.eval_every) and self._due(cfg.eval_every, total)
                if evaluated:
                    last.update(self.evaluate())
                    self._log_val(logger, last)
                if cfg.checkpoint_every and self._due(cfg.checkpoint_every, total):
                    self.checkpointer.save(
                        self.step, metrics=_val(last) if evaluated else None, **self.components()
                    )
                    saved_step = self.step
                if self.step >= total:
                    break
                if self._stop_requested():
                    bar.close()
                    raise self._stop(total, saved_step)
        bar.close()
        return self._finish(logger, last, saved_step)

    # -- the loop's parts ---------------------------------------------------------------

    def _accumulate(self, i: int, batch: dict[str, Any], batches: int, window: _LogWindow) -> bool:
        """Backward of batch ``i`` of this pass's ``batches``; True when it ends a step."""
        accum = self.config.grad_accum
        group_size = min(accum, batches - (i // accum) * accum)  # the pass's last may be short
        last_in_group = (i + 1) % accum == 0 or i + 1 == batches
        window.losses.append(self._backward(batch, group_size, sync=last_in_group))
        window.samples += len(batch[self.target_key]) * get_world_size()
        return last_in_group

    def _step(self, order: _OrderLog | None, group: list[tuple[int, dict[str, Any]]]) -> None:
        """The optimizer step that ends a group of batches; the step counter moves on."""
        self._optimizer_step()
        self.step += 1
        if order is not None:
            order.write(self.step, group)
        pause_point("step", self.step)

    def _due(self, every: int, total: int) -> bool:
        """Whether a periodic evaluation or checkpoint falls on this step (the last step
        has its own, after the loop)."""
        return self.step % every == 0 and self.step < total

    def _log_train(self, logger: RunLogger, bar: Any, window: _LogWindow) -> float:
        """Log the mean loss and throughput since the last log; returns that mean loss."""
        mean_loss = float(torch.stack(window.losses).float().mean()) if window.losses else math.nan
        now = time.perf_counter()
        rate = window.samples / max(now - window.tick, 1e-9)
        logger.scalars(
            self.step,
            {"train/loss": mean_loss, "train/lr": self._lr(), "train/samples_per_s": rate},
        )
        bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{rate:,.0f}")
        window.losses.clear()
        window.samples, window.tick = 0, now
        return mean_loss

    def _log_val(self, logger: RunLogger, last: dict[str, float]) -> None:
        """Log the validation metrics of ``last`` (``val_loss`` -> ``val/loss``)."""
        values = {k.replace("_", "/", 1): v for k, v in last.items() if k.startswith("val_")}
        logger.scalars(self.step, values)

    def _stop(self, total: int, saved_step: int) -> RunInterrupted:
        """Save this step (unless just saved) for a stop request; the error to raise."""
        if saved_step != self.step:
            self.checkpointer.save(self.step, **self.components())
        self.checkpointer.wait()
        barrier()
        return self._interrupted(total)

    def _finish(
        self, logger: RunLogger, last: dict[str, float], saved_step: int
    ) -> dict[str, float]:
        """The final evaluation and checkpoint; the run's summary metrics."""
        last.update(self.evaluate())
        if last:
            self._log_val(logger, last)
        if saved_step != self.step:
            self.checkpointer.save(self.step, metrics=_val(last), **self.components())
        self.checkpointer.wait()  # durable before any rank returns
        barrier()
        world = get_world_size()
        if world > 1 and "train_loss" in last:  # the mean over all ranks, not rank 0's own
            loss = torch.tensor([last["train_loss"]], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(loss)
            last["train_loss"] = float(loss) / world
        summary = {"step": float(self.step), **last}
        log.info(
            "finished at step %d: %s",
            self.step,
            ", ".join(f"{k}={v:.4f}" for k, v in summary.items() if k != "step"),
        )
        return summary

    def _stop_requested(self) -> bool:
        stop = self.stop_signal or 0
        if self.watch_stop and get_world_size() > 1:
            flag = torch.tensor([stop], dtype=torch.int64, device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = int(flag)
        if stop:
            self.stop_signal = stop
        return bool(stop)

    def _interrupted(self, total: int) -> RunInterrupted:
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "request"
        return RunInterrupted(
            f"stopped by {name} at step {self.step} of {total}; checkpoint of step {self.step} "
            f"saved in {self.checkpointer.directory}; the same command again resumes from "
            f"step {self.step}",
            exit_code=128 + (self.stop_signal or signal.SIGINT),
        )

    def _backward(self, batch: dict[str, Any], group_size: int, *, sync: bool) -> torch.Tensor:
        inputs = batch[self.input_key].to(self.device, non_blocking=True)
        targets = batch[self.target_key].to(self.device, non_blocking=True)
        no_sync = getattr(self.model, "no_sync", None)
        context = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with context:
            with self._autocast():
                outputs = self.model(inputs)
                loss = self.loss_fn(outputs, targets)
            scaled = loss / group_size if group_size > 1 else loss
            if self.scaler.is_enabled():
                scaled = self.scaler.scale(scaled)
            scaled.backward()
        return loss.detach()

    def _optimizer_step(self) -> None:
        scaler = self.scaler if self.scaler.is_enabled() else None
        if self.config.grad_clip is not None:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.config.amp:
            return None
        if self.device.type == "cuda":
            return torch.float16
        if self.device.type == "cpu":
            return torch.bfloat16
        log.warning("amp is not supported on %s here; training in float32", self.device.type)
        return None

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def total_steps(config: TrainerConfig, train_loader: Any) -> int:
    """Optimizer steps of a run: ``config.max_steps``, or its epochs of ``train_loader``.

    A function of the config and the loader alone, so a scheduler that needs the run's
    length can be built before the Trainer that will step it.
    """
    if config.max_steps is not None:
        return config.max_steps
    return config.epochs * math.ceil(batches_per_epoch(train_loader) / config.grad_accum)


def batches_left(loader: Any) -> int:
    """Batches the next pass of ``loader`` yields (``epochal.Loader.batches_left``, else len)."""
    left = getattr(loader, "batches_left", None)
    return len(loader) if left is None else int(left)


def batches_per_epoch(loader: Any) -> int:
    """Batches each rank gets in one full epoch (``epochal.Loader.batches_per_epoch``)."""
    per_epoch = getattr(loader, "batches_per_epoch", None)
    if per_epoch is None:
        raise InvalidTypeError(
            f"the training loader ({type(loader).__name__}) has no batches_per_epoch; use an "
            f"epochal.Loader or set TrainerConfig.max_steps"
        )
    return int(per_epoch)


@dataclasses.dataclass
class _LogWindow:
    """What the loop gathers between two train logs."""

    tick: float  # time.perf_counter() at the last log
    losses: list[torch.Tensor] = dataclasses.field(default_factory=list)  # detached (P11)
    samples: int = 0  # over all ranks


class _OrderLog:
    """``order-rank<R>.jsonl``: the record indices of every step (what verify-resume compares)."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        if is_main_process():
            run_dir.mkdir(parents=True, exist_ok=True)
            for path in run_dir.glob(
                "order-rank*.jsonl"
            ):  # steps after the restored one never happened
                _truncate(path, resume_step)
        barrier()
        self._f = open(run_dir / f"order-rank{get_rank()}.jsonl", "a")  # noqa: SIM115

    def write(self, step: int, group: list[tuple[int, dict[str, Any]]]) -> None:
        for epoch, batch in group:
            record = {
                "step": step,
                "epoch": epoch,
                "index": batch["_index"].tolist(),
                "repeat": batch["_repeat"].tolist(),
            }
            self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _truncate(path: Path, step: int) -> None:
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError):
            continue  # a line cut short by a kill
    path.write_text("".join(keep))


def _val(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("val_")}


def _is_dataclass(config: Any) -> bool:
    return dataclasses.is_dataclass(config) and not isinstance(config, type)


def _as_dict(config: Any) -> dict[str, Any]:
    if _is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config) if isinstance(config, dict) else {}
