"""``epochal lint PATH...``: report the training-code bugs of PROBLEMS.md found in files.

Exit status: 0 when nothing is found, 1 when something is, 2 on a usage error (a path
that does not exist, an unknown rule id or option). Files that cannot be parsed are
skipped with a warning on stderr; they do not change the exit status.
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
    """Find classic PyTorch training-code bugs (P6, P9-P12 of PROBLEMS.md) in Python files."""

    paths: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="PATH")] = ()
    """Files or directories to lint (directories are searched for *.py files)."""
    format: Literal["text", "json"] = "text"
    """Output format: text for people, json for tools."""
    select: tuple[str, ...] = ()
    """Run only these rule ids (default: all), e.g. --select EPL001 EPL005."""
    ignore: tuple[str, ...] = ()
    """Rule ids not to run."""
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
    cfg = tyro.cli(LintConfig, args=argv, prog="epochal lint")
    if not cfg.paths:
        print("epochal lint: error: give at least one file or directory to lint", file=sys.stderr)
        return 2
    if cfg.jobs < 0:
        print(f"epochal lint: error: --jobs must be >= 0, got {cfg.jobs}", file=sys.stderr)
        return 2
    try:
        report = lint_paths(
            cfg.paths,
            select=cfg.select or None,
            ignore=cfg.ignore,
            jobs=cfg.jobs or None,
            progress=_progress,
        )
    except LintUsageError as err:
        print(f"epochal lint: error: {err}", file=sys.stderr)
        return 2
    for skipped in report.skipped:
        print(f"epochal lint: warning: skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    if cfg.format == "json":
        print(format_json(report))
    else:
        print(format_text(report, explain=cfg.explain))
    return 1 if report.findings else 0
