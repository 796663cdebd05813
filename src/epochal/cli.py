"""The ``epochal`` command: a thin dispatcher over subcommands.

Each subcommand lives in its own module and exposes ``main(argv: list[str]) -> int``; its
options are a typed dataclass parsed with tyro (field docstrings are the help text). The
module is imported only when its subcommand runs, so ``epochal --help`` is instant.
User errors (``epochal.Error``) are printed as one line, never as a traceback.
"""

from __future__ import annotations

import importlib
import sys

from epochal._errors import Error

__all__ = ["COMMANDS", "main"]

# subcommand -> (module with ``main(argv)``, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": (
        "epochal._bench",
        "Measure loader throughput against a raw numpy gather on this machine.",
    ),
    "build": (
        "epochal.store._cmd_build",
        "Build a store from images, JSONL, CSV, Parquet, .npy/.npz or WebDataset tars.",
    ),
    "demo": ("epochal._demo", "Run the built-in demo on embedded data (no downloads)."),
    "inspect": (
        "epochal.store._cmd_inspect",
        "Show a store's schema, counts, sizes and a few records.",
    ),
    "lint": ("epochal.lint.cli", "Find classic training-code bugs (P6, P9-P12) in Python files."),
    "verify": ("epochal.store._cmd_verify", "Check every shard of a store against its checksums."),
}


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
    except Error as err:
        print(f"epochal {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"epochal {name}: interrupted", file=sys.stderr)
        return 130
