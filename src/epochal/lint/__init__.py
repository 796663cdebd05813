"""``epochal lint``: find the classic training-code bugs of docs/problems.md in Python files.

Each rule (``epochal.lint.rules.eplNNN_*``) has a stable id, names the problem it is
about, and explains why the code is wrong and how epochal, or a one-line fix, removes
it. The analysis reads syntax trees only (Python's ``ast``); nothing is imported or run.
The files of one run form one project, so a Dataset and the DataLoader that loads it may
live in different files. ``# epochal: noqa EPL001`` on the reported line silences one
rule there (a bare ``# epochal: noqa`` silences all).

Example::

    from epochal.lint import lint_paths

    report = lint_paths(["src/", "train.py"])
    for finding in report.findings:
        print(finding.path, finding.line, finding.rule, finding.message)
"""

from __future__ import annotations

from epochal.lint._engine import SKIP_DIRS, LintUsageError, discover, lint_paths, lint_source
from epochal.lint._model import Finding, LintReport, Rule, SkippedFile
from epochal.lint._report import format_json, format_text
from epochal.lint.rules import RULES

__all__ = [
    "RULES",
    "SKIP_DIRS",
    "Finding",
    "LintReport",
    "LintUsageError",
    "Rule",
    "SkippedFile",
    "discover",
    "format_json",
    "format_text",
    "lint_paths",
    "lint_source",
]
