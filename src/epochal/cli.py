"""The ``epochal`` command: a thin dispatcher over subcommands.

Each subcommand lives in its own module and exposes ``main(argv: list[str]) -> int``; its
options are a typed dataclass parsed with tyro (field docstrings are the help text) through
:func:`parse_args`, which turns tyro's error boxes into one line. The module is imported
only when its subcommand runs, so ``epochal --help`` is instant. User errors
(``epochal.Error``) are printed as one line, never as a traceback: exit status 2 for a bad
argument or config value (:class:`~epochal._errors.UsageError`, raised before any work),
1 for anything that failed while working.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from epochal._errors import Error, RunInterrupted, UsageError

__all__ = ["COMMANDS", "EXAMPLES", "main", "parse_args"]

T = TypeVar("T")

# subcommand -> (module with ``main(argv)``, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": (
        "epochal._bench",
        "Time the Loader on your store or arrays against a bare gather of the same batches.",
    ),
    "build": (
        "epochal.store._cmd_build",
        "Build a store from images, JSONL, CSV, Parquet, .npy/.npz or WebDataset tars.",
    ),
    "demo": (
        "epochal.train.demo",
        "Train a small CNN on procedural shapes (no download); resumes if run again.",
    ),
    "inspect": (
        "epochal.store._cmd_inspect",
        "Show a store's schema, counts, sizes and a few records.",
    ),
    "lint": ("epochal.lint.cli", "Find classic training-code bugs (P6, P9-P12) in Python files."),
    "verify": ("epochal.store._cmd_verify", "Check every shard of a store against its checksums."),
    "train": (
        "epochal.train.run",
        "Train a model on a store or source from a typed config; resumes from its run dir.",
    ),
    "verify-resume": (
        "epochal.train.verify_resume",
        "Kill a run at random steps, resume it, check it ends bitwise identical.",
    ),
}


# subcommand -> real command lines shown at the end of its --help (a test runs none of
# them blindly: each must name options that exist)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "bench": (
        "epochal bench data/images                   # a store: Loader vs bare gather",
        "epochal bench features.npz --num-workers 2 --batch-size 512",
    ),
    "build": (
        "epochal build images/ data/images           # root/<class>/*.jpg -> a store",
        "epochal build train.jsonl s3://bucket/train --shard-size-mb 128",
    ),
    "demo": (
        "epochal demo                                # train; run it again to resume",
        "epochal demo --run-dir runs/small --epochs 2 --num-train 1000",
    ),
    "inspect": (
        "epochal inspect data/images",
        "epochal inspect s3://bucket/train --records 5",
    ),
    "lint": (
        "epochal lint src/ train.py                  # text, with explanations",
        "epochal lint --format json --select EPL001 .",
    ),
    "train": (
        "epochal train run.yaml --optim.lr 0.01      # the file's settings, one overridden",
        "torchrun --standalone --nproc_per_node 2 -m epochal train run.yaml",
    ),
    "verify": (
        "epochal verify data/images",
        "epochal verify s3://bucket/train",
    ),
    "verify-resume": (
        "epochal verify-resume                       # a small built-in job, about a minute",
        "epochal verify-resume run.yaml --kills 3",
    ),
}


def parse_args(
    cls: type[T],
    argv: Sequence[str],
    *,
    prog: str,
    description: str | None = None,
    default: T | None = None,
) -> T:
    """``tyro.cli`` whose argument errors are one :class:`UsageError` line, not a box.

    Args:
        cls: The options dataclass (field docstrings are the help text).
        argv: The arguments after the subcommand's name.
        prog: The command as the usage line shows it, e.g. ``"epochal train [CONFIG]"``.
        description: Text at the top of ``--help`` (default: the class docstring).
        default: An instance whose values replace the dataclass defaults.

    Raises:
        UsageError: An unknown option, a missing or malformed value.
    """
    import tyro

    captured = io.StringIO()
    columns = os.environ.get("COLUMNS")
    if not {"-h", "--help"} & set(argv):
        os.environ["COLUMNS"] = "10000"  # tyro's error box: one message per line, unwrapped
    try:
        with contextlib.redirect_stderr(captured):
            # tyro types its result as ``T | None`` when given a default; it is always a T
            return cast(
                T,
                tyro.cli(cls, args=list(argv), prog=prog, description=description, default=default),
            )
    except SystemExit as exit_:
        if exit_.code in (0, None):  # --help (printed on stdout)
            sys.stderr.write(captured.getvalue())
            raise
        command = prog.split(" [")[0]
        raise UsageError(f"{_one_line(captured.getvalue())} (see '{command} --help')") from None
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


_FRAME = set("\u2500\u2501\u2502\u2503\u256d\u256e\u2570\u256f\u254c\u2574\u2576 ")


def _one_line(box: str) -> str:
    """The message of tyro's error box: its lines before the first rule, frame removed."""
    lines = []
    for raw in box.splitlines():
        line = raw.strip().strip("\u2502\u2503").strip()
        if raw.strip().startswith(("\u256d", "\u250c")) or not line:
            continue  # the top edge (with the box's title) or an empty row
        if set(line) <= _FRAME:
            break  # the rule before "Argument helptext" / "For full helptext"
        lines.append(" ".join(line.split()))
    return "; ".join(lines) or "invalid arguments"


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: epochal COMMAND [OPTIONS]",
        "",
        "Random-access training data and exactly resumable runs for PyTorch.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in sorted(COMMANDS.items())]
    lines += ["", "Run 'epochal COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the ``epochal`` command line; returns the process exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from epochal import __version__

        print(f"epochal {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"epochal: error: unknown command {name!r}; choose one of: {', '.join(sorted(COMMANDS))}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except SystemExit as exit_:
        if exit_.code in (0, None) and ("-h" in rest or "--help" in rest):
            _print_examples(name)
        raise
    except RunInterrupted as stop:
        print(f"{_fresh_line()}epochal {name}: {stop}", file=sys.stderr)
        return stop.exit_code
    except UsageError as err:
        print(f"epochal {name}: error: {err}", file=sys.stderr)
        return 2
    except Error as err:
        print(f"{_fresh_line()}epochal {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_fresh_line()}epochal {name}: interrupted", file=sys.stderr)
        return 130


def _print_examples(name: str) -> None:
    print("examples:")
    for line in EXAMPLES.get(name, ()):
        print(f"  {line}")
    sys.stdout.flush()


def _fresh_line() -> str:
    """A newline when stderr is a terminal: a progress bar may own the current line."""
    isatty: Any = getattr(sys.stderr, "isatty", None)
    return "\n" if isatty is not None and isatty() else ""
