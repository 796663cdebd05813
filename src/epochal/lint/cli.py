"""``epochal lint PATH...``: report the training-code bugs of docs/problems.md found in files.

Exit status: 0 when every file was linted and nothing was found; 1 when something was
found or a file could not be linted (it cannot parse, or cannot be read: a CI gate must
not pass a file it never checked); 2 on a usage error (a path that does not exist, an
unknown rule id or option). Skipped files are also named on stderr.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import tyro

from epochal.lint._engine import LintUsageError, lint_paths
from epochal.lint._report import format_json, format_text

__all__ = ["LintConfig", "main"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LintConfig:
    """Find classic PyTorch training-code bugs (P6, P9-P12: see docs/problems.md) in Python
    files, reading their syntax only: nothing is imported or run. Exit status 0: clean;
    1: problems found, or a file could not be linted; 2: a usage error."""

    paths: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="PATH")] = ()
    """Files or directories to lint (directories are searched for *.py files)."""
    format: Literal["text", "json"] = "text"
    """Output format: text for people, json for tools."""
    # one value per flag (repeat it, or separate ids with commas), so that the paths that
    # follow are not taken for rule ids
    select: Annotated[
        tuple[str, ...], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="RULE[,RULE]")
    ] = ()
    """Run only these rule ids (default: all): --select EPL001,EPL005 or --select EPL001 --select EPL005."""
    ignore: Annotated[
        tuple[str, ...], tyro.conf.UseAppendAction, tyro.conf.arg(metavar="RULE[,RULE]")
    ] = ()
    """Rule ids not to run (same forms as --select)."""
    explain: bool = True
    """Print each finding's explanation paragraph under it (text format)."""
    jobs: int = 0
    """Processes that parse files; 0 picks one per CPU for large trees."""


def _progress(results: Iterator[Any], total: int) -> Iterator[Any]:
    from tqdm import tqdm

    # disable=None: a bar only when stderr is a terminal, never in pipes or CI logs
    yield from tqdm(
        results, total=total, desc="epochal lint", unit="file", disable=None, leave=False
    )


def main(argv: list[str]) -> int:
    """Run ``epochal lint``; returns 0 (clean), 1 (problems found) or 2 (usage error)."""
    from epochal.cli import parse_args

    cfg = parse_args(LintConfig, argv, prog="epochal lint")
    if not cfg.paths:
        print("epochal lint: error: give at least one file or directory to lint", file=sys.stderr)
        return 2
    if cfg.jobs < 0:
        print(f"epochal lint: error: --jobs must be >= 0, got {cfg.jobs}", file=sys.stderr)
        return 2
    try:
        report = lint_paths(
            cfg.paths,
            select=_rule_ids(cfg.select) or None,
            ignore=_rule_ids(cfg.ignore),
            jobs=cfg.jobs or None,
            progress=_progress,
        )
    except LintUsageError as err:
        print(f"epochal lint: error: {err}", file=sys.stderr)
        return 2
    for skipped in report.skipped:
        print(
            f"epochal lint: error: could not lint {skipped.path}: {skipped.reason}",
            file=sys.stderr,
        )
    if cfg.format == "json":
        print(format_json(report))
    else:
        print(format_text(report, explain=cfg.explain))
    return 1 if report.findings or report.skipped else 0


def _rule_ids(values: tuple[str, ...]) -> tuple[str, ...]:
    """``("EPL001,EPL005", "EPL003")`` -> ``("EPL001", "EPL005", "EPL003")``."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())
