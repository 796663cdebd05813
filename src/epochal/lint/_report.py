"""Render a lint report as text for people or as JSON for tools."""

from __future__ import annotations

import json
import textwrap
from collections import Counter

from epochal.lint._model import LintReport

__all__ = ["JSON_VERSION", "format_json", "format_text"]

# version of the --format json schema; bumped when a field changes meaning or goes away
JSON_VERSION = 1


def format_text(report: LintReport, *, explain: bool = True, width: int = 88) -> str:
    """``path:line:col: EPL00N [Pn] message`` per finding, its explanation, and a summary line."""
    lines = []
    for finding in report.findings:
        lines.append(
            f"{finding.path}:{finding.line}:{finding.col}: {finding.rule} [{finding.problem}] "
            f"{finding.message}"
        )
        if explain:
            lines.append(
                textwrap.fill(
                    finding.explanation,
                    width=width,
                    initial_indent="    ",
                    subsequent_indent="    ",
                )
            )
    lines.append(_summary(report))
    return "\n".join(lines)


def _summary(report: LintReport) -> str:
    files = f"{report.files_checked} file{'s' if report.files_checked != 1 else ''}"
    extra = []
    if report.skipped:
        extra.append(f"{len(report.skipped)} skipped")
    if report.suppressed:
        extra.append(f"{report.suppressed} suppressed by noqa")
    tail = f" ({', '.join(extra)})" if extra else ""
    if not report.findings and report.skipped:
        n = len(report.skipped)
        return (
            f"No problems found in {files}, but {n} file{'s' if n != 1 else ''} could not be "
            f"linted (named above)."
        )
    if not report.findings:
        return f"No problems found in {files}{tail}."
    counts = Counter(f.rule for f in report.findings)
    by_rule = ", ".join(f"{rule} x{n}" for rule, n in sorted(counts.items()))
    n = len(report.findings)
    return f"Found {n} problem{'s' if n != 1 else ''} in {files}: {by_rule}{tail}."


def format_json(report: LintReport) -> str:
    """The report as one JSON document.

    Schema (version 1)::

        {"version": 1, "files_checked": int, "suppressed": int,
         "skipped": [{"path": str, "reason": str}],
         "findings": [{"rule": "EPL001", "problem": "P6", "path": str, "line": int,
                       "column": int, "message": str, "explanation": str}]}
    """
    document = {
        "version": JSON_VERSION,
        "files_checked": report.files_checked,
        "suppressed": report.suppressed,
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
        "findings": [f.to_json() for f in report.findings],
    }
    return json.dumps(document, indent=2)
