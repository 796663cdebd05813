"""The data a lint run passes around: rules, the hits they make, and the findings reported."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from epochal.lint._context import ModuleContext

__all__ = ["Finding", "Hit", "LintReport", "Rule", "SkippedFile", "report_hits"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One place a rule objects to, inside one file.

    Attributes:
        line: 1-based line of the offending node.
        col: 1-based column of the offending node.
        message: one line saying what is wrong here (names the variables involved).
        end_line: last line of the offending node; a ``noqa`` comment there counts too.
    """

    line: int
    col: int
    message: str
    end_line: int = 0


def report_hits(facts: Mapping[str, Any]) -> Iterable[tuple[str, Hit]]:
    """The ``report`` step of a rule whose ``collect`` already returns a list of hits."""
    for path, hits in facts.items():
        for hit in hits or ():
            yield path, hit


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A lint rule: a stable id, the problem it detects, and how to find it.

    A rule works in two steps so that files can be parsed in parallel and a rule can still
    look at the whole project (e.g. a Dataset in one file, its DataLoader in another):
    ``collect`` runs once per parsed file and returns picklable facts; ``report`` gets the
    facts of every file of the run (path -> facts) and yields ``(path, Hit)`` pairs.

    Attributes:
        id: stable identifier, ``EPL`` and three digits; never reused for another check.
        problem: the item of docs/problems.md the rule is about (``P6``, ``P9``, ...).
        title: one-line name of the bug.
        explanation: one paragraph: why it is a bug, and how epochal or a one-line fix
            removes it. Printed under every finding in text output.
        collect: per-file step, ``collect(ctx) -> facts``.
        report: project step, ``report({path: facts}) -> iterable of (path, Hit)``.
    """

    id: str
    problem: str
    title: str
    explanation: str
    collect: Callable[[ModuleContext], Any]
    report: Callable[[Mapping[str, Any]], Iterable[tuple[str, Hit]]] = report_hits


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One bug found: where it is, which rule found it, and what to do about it.

    Attributes:
        rule: rule id, e.g. ``"EPL001"``.
        problem: the docs/problems.md item, e.g. ``"P6"``.
        path: the file, as given on the command line or found under a given directory.
        line: 1-based line.
        col: 1-based column.
        message: one line about this occurrence.
        explanation: the rule's paragraph (why, and the fix).
    """

    rule: str
    problem: str
    path: str
    line: int
    col: int
    message: str
    explanation: str

    def to_json(self) -> dict[str, Any]:
        """This finding as a JSON-serialisable dict (the ``--format json`` schema)."""
        return {
            "rule": self.rule,
            "problem": self.problem,
            "path": self.path,
            "line": self.line,
            "column": self.col,
            "message": self.message,
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file that could not be linted (syntax error, undecodable bytes, unreadable)."""

    path: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class LintReport:
    """The result of a lint run.

    Attributes:
        findings: every finding not suppressed by ``# epochal: noqa``, sorted by path,
            line, column and rule.
        files_checked: number of files parsed and checked.
        skipped: files that could not be parsed, with the reason.
        suppressed: number of findings silenced by ``noqa`` comments.
    """

    findings: list[Finding]
    files_checked: int
    skipped: list[SkippedFile]
    suppressed: int = 0
