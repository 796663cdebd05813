"""Typed run configuration: dataclasses parsed with tyro from files and the command line (P12).

A configuration is plain data: nested dataclasses of numbers, strings and booleans, so it
pickles (DDP, spawn), converts to a dict for a checkpoint or ``config.json``, and converts
back. ``parse`` reads an optional config file (JSON, TOML or YAML) and then applies the
command line on top of it; every field's docstring is its ``--help`` text.

The config file may come anywhere on the command line (or as ``--config PATH``). Fields
that may be None take the string ``None`` on the command line and in files (TOML has no
null: ``val = "None"`` there means "no validation set").

Example::

    epochal train run.yaml --optim.lr 0.01 --trainer.max-steps 500
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import tyro

from epochal._errors import Error, InvalidTypeError, SeedError, UsageError
from epochal._keys import check_seed

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

_CONFIG_SUFFIXES = (".json", ".toml", ".yaml", ".yml")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


@dataclasses.dataclass(kw_only=True)
class DataConfig:
    """Where the records come from and how they are batched."""

    train: str = "shapes:train"
    """Training records: a store path or URL, an .npz file of columns, or 'shapes:train[:N]' (built-in procedural images)."""
    val: Annotated[str | None, tyro.conf.arg(metavar="PATH|None")] = "shapes:val"
    """Validation records (same forms as --data.train), or None for no validation set."""
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
        _check(bool(self.train), "data.train must name the training records, got ''")
        _check(self.batch_size >= 1, f"data.batch_size must be >= 1, got {self.batch_size}")
        _check(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        _check(self.image_size >= 1, f"data.image_size must be >= 1, got {self.image_size}")


@dataclasses.dataclass(kw_only=True)
class ModelConfig:
    """The network."""

    name: str = "small_cnn"
    """A built-in model ('small_cnn', 'mlp') or 'package.module:factory', called with num_classes= and dropout=."""
    num_classes: int = 4
    """Number of classes (labels are 0 .. num_classes - 1)."""
    dropout: float = 0.1
    """Dropout probability before the classifier."""

    def __post_init__(self) -> None:
        _check(self.num_classes >= 1, f"model.num_classes must be >= 1, got {self.num_classes}")
        _check(0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout}")


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

    def __post_init__(self) -> None:
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _check(0 <= self.momentum < 1, f"optim.momentum must be in [0, 1), got {self.momentum}")
        _check(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclasses.dataclass(kw_only=True)
class TrainerConfig:
    """The training loop."""

    epochs: int = 3
    """Epochs to train (ignored when max_steps is set)."""
    max_steps: Annotated[int | None, tyro.conf.arg(metavar="INT|None")] = None
    """Optimizer steps to train; overrides epochs."""
    grad_accum: int = 1
    """Batches whose gradients are summed into one optimizer step."""
    grad_clip: Annotated[float | None, tyro.conf.arg(metavar="FLOAT|None")] = 1.0
    """Clip the global gradient norm to this value (None: no clipping)."""
    amp: bool = False
    """Mixed precision with torch.autocast (bfloat16 on CPU, float16 + GradScaler on CUDA)."""
    eval_every: int = 0
    """Evaluate every N steps (0: only at the end)."""
    checkpoint_every: int = 100
    """Checkpoint every N steps, and always at the end."""
    keep_last: Annotated[int | None, tyro.conf.arg(metavar="INT|None")] = 2
    """Newest checkpoints to keep (None keeps all)."""
    keep_best: Annotated[str | None, tyro.conf.arg(metavar="METRIC:MODE|None")] = None
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
        _check(self.grad_accum >= 1, f"trainer.grad_accum must be >= 1, got {self.grad_accum}")
        _check(
            self.max_steps is not None or self.epochs >= 1,
            f"trainer.epochs must be >= 1 (or set max_steps), got {self.epochs}",
        )
        _check(
            self.max_steps is None or self.max_steps >= 1,
            f"trainer.max_steps must be >= 1 or None, got {self.max_steps}",
        )
        _check(
            self.grad_clip is None or self.grad_clip > 0,
            f"trainer.grad_clip must be > 0 or None, got {self.grad_clip}",
        )
        for name in ("eval_every", "checkpoint_every"):
            value = getattr(self, name)
            _check(value >= 0, f"trainer.{name} must be >= 0 (0: only at the end), got {value}")
        _check(
            self.keep_last is None or self.keep_last >= 1,
            f"trainer.keep_last must be >= 1 or None (keep all), got {self.keep_last}",
        )
        _check(self.log_every >= 1, f"trainer.log_every must be >= 1, got {self.log_every}")
        if self.keep_best is not None:
            metric, _, mode = self.keep_best.rpartition(":")
            _check(
                bool(metric) and mode in ("min", "max"),
                f"trainer.keep_best must look like 'val_loss:min' or 'val_accuracy:max', "
                f"got {self.keep_best!r}",
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
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'mps'."""
    sync_batchnorm: bool = False
    """Synchronise BatchNorm statistics across ranks (multi-process runs only)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    fresh: bool = False
    """Start over: delete what an earlier run left in run_dir (checkpoints, logs, config.json) first."""

    def __post_init__(self) -> None:
        _check(bool(self.run_dir), "run_dir must name a directory, got ''")
        try:
            check_seed(self.seed)
        except SeedError as error:  # the one seed rule, refused before any work starts
            raise UsageError(str(error)) from None


def to_dict(config: Any) -> dict[str, Any]:
    """The configuration as a plain, JSON-serialisable dict (nested dataclasses -> dicts).

    Paths become strings and tuples lists, so the dict loads anywhere (a checkpoint is
    read with ``torch.load(weights_only=True)``, which refuses ``pathlib`` objects).
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise InvalidTypeError(f"expected a dataclass instance, got {type(config).__name__}")
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

    Unknown keys and values of the wrong type are a :class:`UsageError` naming the key and
    what it takes; missing keys take their defaults. A field that may be None also takes
    the string ``"None"`` (TOML has no null).
    """
    return _from_dict(cls, data, "")


def _from_dict(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, dict):
        where = f"config key {prefix[:-1]!r}" if prefix else cls.__name__
        raise UsageError(f"{where} must be a table of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(f"{prefix}{key}" for key in set(data) - fields)
    if unknown:
        valid = sorted(f"{prefix}{name}" for name in fields)
        raise UsageError(f"unknown config key(s) {unknown}; valid keys here: {valid}")
    kwargs = {name: _value(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    return cls(**kwargs)


def _value(hint: Any, value: Any, key: str) -> Any:
    """``value`` as the type ``hint`` asks for, or a UsageError saying what the key takes."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or value == "None":
            return None
        (hint,) = [a for a in args if a is not type(None)]
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, f"{key}.")  # type: ignore[arg-type]
    if typing.get_origin(hint) is Literal:
        if value in typing.get_args(hint):
            return value
        wanted = " or ".join(repr(a) for a in typing.get_args(hint))
    elif hint is bool:
        if isinstance(value, bool):
            return value
        wanted = "true or false"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        wanted = "a whole number"
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        wanted = "a number"
    elif hint in (str, Path):
        if isinstance(value, str):
            return Path(value) if hint is Path else value
        wanted = "a string (quote it)"
    else:
        return value
    if args and type(None) in args:
        wanted += ' or "None"'
    raise UsageError(f"config key {key!r} must be {wanted}, got {value!r} ({type(value).__name__})")


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a config file: ``.json``, ``.toml`` or ``.yaml``/``.yml`` (needs PyYAML)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CONFIG_SUFFIXES:
        raise UsageError(
            f"config file {str(path)!r} must end in .json, .toml, .yaml or .yml, got {suffix!r}"
        )
    if not path.is_file():
        raise UsageError(f"config file {str(path)!r} does not exist (or is not a file)")
    try:
        text = path.read_text()
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = _toml().loads(text)
        else:
            yaml = _yaml()
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise ValueError(_yaml_error(err)) from err
    except (ValueError, ImportError, OSError) as err:
        why = " ".join(str(err).split())
        raise UsageError(f"cannot read config file {str(path)!r}: {why}") from err
    if not isinstance(data, dict):
        raise UsageError(
            f"config file {str(path)!r} must hold a table of settings at the top level, "
            f"got {type(data).__name__}"
        )
    return data


def _yaml_error(err: Any) -> str:
    """A YAML parse error as one line: where, then what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def parse(
    cls: type[T],
    argv: Sequence[str],
    *,
    prog: str,
    default: T | None = None,
    description: str | None = None,
) -> T:
    """Parse a config: an optional config file (anywhere, or ``--config PATH``), then flags.

    Args:
        cls: The config dataclass.
        argv: Command-line arguments (without the program name).
        prog: Program name for ``--help``.
        default: Defaults to use instead of the dataclass's own (a config file overrides
            them, flags override both).
        description: Text at the top of ``--help``.

    Raises:
        UsageError: A bad flag, config file or value (nothing has been done yet).
    """
    from epochal.cli import parse_args

    args, path = _split_config_path(cls, argv)
    base = to_dict(default) if default is not None else {}
    if path is not None:
        base = _merge(base, load_file(path))
    start = from_dict(cls, base) if base else None
    return parse_args(cls, args, prog=prog, default=start, description=description)


def _split_config_path(cls: type, argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The flags, and the one argument that is not a flag or a flag's value (the file)."""
    switches = _boolean_flags(cls)
    args: list[str] = []
    paths: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        i += 1
        if token == "--config":
            if following is None:
                raise UsageError("--config needs a path to a .json, .toml or .yaml file")
            paths.append(following)
            i += 1
        elif token.startswith("--config="):
            paths.append(token.split("=", 1)[1])
        elif not token.startswith("-") or token == "-":
            paths.append(token)
        else:
            args.append(token)
            name = token.split("=", 1)[0].replace("_", "-")
            takes_value = "=" not in token and name not in switches and name not in ("-h", "--help")
            # the flag's value, even one that looks like a file; never the next flag
            if takes_value and following is not None and not following.startswith("--"):
                args.append(following)
                i += 1
    if len(paths) > 1:
        raise UsageError(f"give one config file, got {len(paths)}: {', '.join(paths)}")
    return args, (paths[0] if paths else None)


def _boolean_flags(cls: type, prefix: str = "--") -> set[str]:
    """Every flag of ``cls`` that takes no value (booleans: ``--x`` and ``--no-x``), spelt
    with hyphens (:func:`_split_config_path` compares them with ``_`` made ``-``)."""
    flags = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        name = field.name.replace("_", "-")
        if dataclasses.is_dataclass(hint):
            flags |= _boolean_flags(hint, f"{prefix}{name}.")  # type: ignore[arg-type]
        elif hint is bool:
            flags |= {f"{prefix}{name}", f"{prefix}no-{name}"}
    return flags


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
