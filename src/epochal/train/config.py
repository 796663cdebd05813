"""Typed run configuration: dataclasses parsed with tyro from files and the command line (P12).

A configuration is plain data: nested dataclasses of numbers, strings and booleans, so it
pickles (DDP, spawn), converts to a dict for a checkpoint or ``config.json``, and converts
back. ``parse`` reads an optional config file (JSON, TOML or YAML) and then applies the
command line on top of it; every field's docstring is its ``--help`` text.

Example::

    epochal train run.yaml --optim.lr 0.01 --trainer.max-steps 500
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from epochal._errors import Error

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainerConfig",
    "from_dict",
    "load_file",
    "parse",
    "save_config",
    "to_dict",
]

T = TypeVar("T")


@dataclasses.dataclass(kw_only=True)
class DataConfig:
    """Where the records come from and how they are batched."""

    train: str = "shapes:train"
    """Training records: a store path or URL, an .npz file of columns, or 'shapes:train[:N]' (built-in procedural images)."""
    val: str | None = "shapes:val"
    """Validation records (same forms as --data.train), or None to skip evaluation."""
    input_key: str = "image"
    """Column that holds the model input."""
    target_key: str = "label"
    """Column that holds the integer class label."""
    batch_size: int = 64
    """Records per batch PER RANK (the global batch is batch_size * world size)."""
    num_workers: int = 0
    """Loader worker processes per rank (the result does not depend on it)."""
    shuffle: bool = True
    """Shuffle the whole training set every epoch."""
    augment: bool = False
    """Random horizontal flips and shifts of up to 2 pixels of (C, H, W) image inputs."""
    image_size: int = 32
    """Encoded images (JPEG/PNG bytes, as a store built from an image folder keeps them) are decoded to RGB and resized to this square side, as float (3, H, W) in [0, 1]."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise Error(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise Error(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.image_size < 1:
            raise Error(f"data.image_size must be >= 1, got {self.image_size}")


@dataclasses.dataclass(kw_only=True)
class ModelConfig:
    """The network."""

    name: str = "small_cnn"
    """A built-in model ('small_cnn', 'mlp') or 'package.module:factory', called with num_classes= and dropout=."""
    num_classes: int = 4
    """Number of classes (labels are 0 .. num_classes - 1)."""
    dropout: float = 0.1
    """Dropout probability before the classifier."""


@dataclasses.dataclass(kw_only=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: Literal["adamw", "sgd"] = "adamw"
    """Optimizer."""
    lr: float = 3e-3
    """Peak learning rate."""
    weight_decay: float = 1e-4
    """Weight decay."""
    momentum: float = 0.9
    """Momentum (SGD only)."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to the peak learning rate."""
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    """Decay after warm-up, down to 0 at the last step ('constant' keeps the peak)."""


@dataclasses.dataclass(kw_only=True)
class TrainerConfig:
    """The training loop."""

    epochs: int = 3
    """Epochs to train (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Optimizer steps to train; overrides epochs."""
    grad_accum: int = 1
    """Batches whose gradients are summed into one optimizer step."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value (None: no clipping)."""
    amp: bool = False
    """Mixed precision with torch.autocast (bfloat16 on CPU, float16 + GradScaler on CUDA)."""
    eval_every: int = 0
    """Evaluate every N steps (0: only at the end)."""
    checkpoint_every: int = 100
    """Checkpoint every N steps, and always at the end."""
    keep_last: int = 2
    """Newest checkpoints to keep."""
    keep_best: str | None = None
    """Also keep the best checkpoint by a metric, e.g. 'val_accuracy:max' or 'val_loss:min'."""
    async_save: bool = True
    """Write checkpoints in a background thread: the loop pauses only to copy the state into CPU memory (one extra copy of it while a write is in flight); the final checkpoint is durable before the run returns. False writes synchronously."""
    log_every: int = 10
    """Log scalars every N steps."""
    progress: bool = True
    """Show a progress bar."""
    record_order: bool = False
    """Record the record indices of every step in order-rank<R>.jsonl (for verify-resume)."""

    def __post_init__(self) -> None:
        if self.grad_accum < 1:
            raise Error(f"trainer.grad_accum must be >= 1, got {self.grad_accum}")
        if self.max_steps is None and self.epochs < 1:
            raise Error(f"trainer.epochs must be >= 1 (or set max_steps), got {self.epochs}")
        if self.keep_best is not None:
            metric, _, mode = self.keep_best.rpartition(":")
            if not metric or mode not in ("min", "max"):
                raise Error(
                    f"trainer.keep_best must look like 'val_loss:min' or 'val_accuracy:max', "
                    f"got {self.keep_best!r}"
                )


@dataclasses.dataclass(kw_only=True)
class RunConfig:
    """A whole training run: `epochal train CONFIG` and `epochal demo` take this."""

    run_dir: str = "runs/train"
    """Directory for checkpoints, logs, TensorBoard events and config.json; a run resumes from it."""
    seed: int = 0
    """Seed of everything: data order, augmentation, initialisation, dropout."""
    deterministic: bool = False
    """Use deterministic algorithms only (torch.use_deterministic_algorithms)."""
    device: str = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'mps'."""
    sync_batchnorm: bool = False
    """Synchronise BatchNorm statistics across ranks (multi-process runs only)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


def to_dict(config: Any) -> dict[str, Any]:
    """The configuration as a plain, JSON-serialisable dict (nested dataclasses -> dicts).

    Paths become strings and tuples lists, so the dict loads anywhere (a checkpoint is
    read with ``torch.load(weights_only=True)``, which refuses ``pathlib`` objects).
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config), default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise Error(
        f"config value {value!r} of type {type(value).__name__} is not plain data; use "
        f"numbers, strings, booleans, paths, lists or nested dataclasses (P12)"
    )


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) config dataclass from :func:`to_dict`'s output or a config file.

    Unknown keys are an error naming the valid ones; missing keys take their defaults.
    """
    if not isinstance(data, dict):
        raise Error(f"{cls.__name__} must be given as a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise Error(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)  # type: ignore[arg-type]
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif hint in (Path, Path | None) and isinstance(value, str):
            value = Path(value)
        kwargs[name] = value
    return cls(**kwargs)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a config file: ``.json``, ``.toml`` or ``.yaml``/``.yml`` (needs PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise Error(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = _toml().loads(text)
        elif suffix in (".yaml", ".yml"):
            data = _yaml().safe_load(text)
        else:
            raise Error(
                f"config file {str(path)!r}: use .json, .toml, .yaml or .yml, got {suffix!r}"
            )
    except (ValueError, ImportError) as err:
        raise Error(f"cannot read config file {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise Error(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def parse(
    cls: type[T],
    argv: Sequence[str],
    *,
    prog: str,
    default: T | None = None,
    description: str | None = None,
) -> T:
    """Parse a config: an optional config file (first argument, or ``--config PATH``), then flags.

    Args:
        cls: The config dataclass.
        argv: Command-line arguments (without the program name).
        prog: Program name for ``--help``.
        default: Defaults to use instead of the dataclass's own (a config file overrides
            them, flags override both).
        description: Text at the top of ``--help``.
    """
    import tyro

    args = list(argv)
    path = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise Error("--config needs a path to a .json, .toml or .yaml file")
        path = args[i + 1]
        del args[i : i + 2]
    elif args and not args[0].startswith("-"):
        path = args.pop(0)
    base = to_dict(default) if default is not None else {}
    if path is not None:
        base = _merge(base, load_file(path))
    start = from_dict(cls, base) if base else None
    return tyro.cli(cls, args=args, default=start, prog=prog, description=description)


def save_config(config: Any, path: str | Path) -> None:
    """Write the config as JSON (which :func:`parse` reads back as a config file)."""
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError as err:
        raise ImportError("TOML config files on Python 3.10 need 'pip install tomli'") from err
    return tomli


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as err:
        raise ImportError("YAML config files need PyYAML: pip install 'epochal[train]'") from err
    return yaml
