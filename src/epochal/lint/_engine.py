"""The lint engine: find the files, parse each once, run every rule, apply ``noqa`` comments.

Each file is read, parsed and indexed once; every rule's per-file ``collect`` step runs on
that index and returns small picklable facts, so large trees are parsed in a process pool.
The rules' project-wide ``report`` step then runs in the calling process over the facts of
all files: the files of one run form one project (a Dataset in ``data.py`` and its
DataLoader in ``train.py`` are seen together).
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from epochal._errors import Error
from epochal.lint._context import ModuleContext
from epochal.lint._model import Finding, LintReport, Rule, SkippedFile
from epochal.lint.rules import RULES

__all__ = ["SKIP_DIRS", "LintUsageError", "discover", "lint_paths", "lint_source"]

# directory names never descended into (hidden directories are skipped as well)
SKIP_DIRS = frozenset({".venv", "__pycache__", "build", "dist", "node_modules", "site-packages"})
# below this many files a process pool costs more than it saves
_PARALLEL_MIN_FILES = 256
_NOQA = re.compile(r"#\s*epochal\s*:\s*noqa\b(?P<codes>[^#]*)", re.IGNORECASE)
_NOQA_ANYWHERE = re.compile(r"noqa", re.IGNORECASE)
_CODE = re.compile(r"\bEPL\d{3}\b", re.IGNORECASE)
_RULES_BY_ID = {rule.id: rule for rule in RULES}


class LintUsageError(Error, ValueError):
    """The lint run was asked for something impossible (missing path, unknown rule id)."""


@dataclass(frozen=True, slots=True)
class _FileResult:
    path: str
    facts: dict[str, Any] | None  # rule id -> facts; None when the file was skipped
    noqa: dict[int, frozenset[str] | None]  # line -> rule ids silenced there (None: all)
    skipped: str | None = None  # why the file could not be linted


def discover(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The Python files to lint under ``paths``, in a stable order, without duplicates.

    A path naming a file is linted whatever its suffix; a directory is searched for
    ``*.py`` files, skipping hidden directories and those in ``SKIP_DIRS``.

    Raises:
        LintUsageError: a path does not exist.
    """
    files: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for given in paths:
        path = os.path.normpath(os.fspath(given))
        if os.path.isfile(path):
            add(path)
        elif os.path.isdir(path):
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(
                    d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                )
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        add(os.path.join(dirpath, name))
        else:
            raise LintUsageError(f"no such file or directory: {os.fspath(given)!r}")
    return files


def lint_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] = (),
    jobs: int | None = None,
    progress: Callable[[Iterator[Any], int], Iterator[Any]] | None = None,
) -> LintReport:
    """Lint the Python files under ``paths`` (files or directories) as one project.

    Args:
        paths: files and directories; directories are searched recursively for ``*.py``.
        select: rule ids to run (default: all).
        ignore: rule ids not to run.
        jobs: processes used to parse files; None picks the CPU count for large trees
            and 1 for small ones.
        progress: optional wrapper ``progress(iterator, total)`` around the per-file
            results, e.g. a tqdm progress bar.

    Returns:
        The findings, sorted by path and line, and the files that could not be parsed.

    Raises:
        LintUsageError: a path does not exist, or a rule id is unknown.
    """
    rules = _pick_rules(select, ignore)
    files = discover(paths)
    return _lint_files(files, rules, jobs=jobs, progress=progress)


def lint_source(
    source: str, path: str = "<string>", *, select: Iterable[str] | None = None
) -> list[Finding]:
    """Lint one piece of Python source on its own (a one-file project); return the findings.

    Raises:
        SyntaxError: ``source`` is not valid Python.
        LintUsageError: a rule id in ``select`` is unknown.
    """
    rules = _pick_rules(select, ())
    result = _analyze(path, source, rules)
    if result.facts is None:
        raise SyntaxError(f"{path}: {result.skipped}")
    return _report([result], rules).findings


def _pick_rules(select: Iterable[str] | None, ignore: Iterable[str]) -> tuple[Rule, ...]:
    chosen = list(_RULES_BY_ID) if select is None else [s.upper() for s in select]
    dropped = {s.upper() for s in ignore}
    for rule_id in (*chosen, *dropped):
        if rule_id not in _RULES_BY_ID:
            raise LintUsageError(
                f"unknown rule id {rule_id!r}; valid ids: {', '.join(_RULES_BY_ID)}"
            )
    return tuple(_RULES_BY_ID[r] for r in _RULES_BY_ID if r in chosen and r not in dropped)


def _lint_files(
    files: list[str],
    rules: tuple[Rule, ...],
    *,
    jobs: int | None,
    progress: Callable[[Iterator[Any], int], Iterator[Any]] | None,
) -> LintReport:
    rule_ids = tuple(rule.id for rule in rules)
    if jobs is None:
        jobs = (os.cpu_count() or 1) if len(files) >= _PARALLEL_MIN_FILES else 1
    if jobs > 1 and len(files) > 1:
        chunk = max(1, min(64, len(files) // (jobs * 8)))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = pool.map(_analyze_file, files, [rule_ids] * len(files), chunksize=chunk)
            if progress is not None:
                results = progress(results, len(files))
            collected = list(results)
    else:
        results = (_analyze_file(path, rule_ids) for path in files)
        if progress is not None:
            results = progress(results, len(files))
        collected = list(results)
    return _report(collected, rules)


def _analyze_file(path: str, rule_ids: tuple[str, ...]) -> _FileResult:
    """Read, parse and collect one file (runs in a pool worker for large trees)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        source = raw.decode(encoding)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError) as err:
        return _FileResult(path, None, {}, skipped=f"cannot read: {err}")
    rules = tuple(_RULES_BY_ID[rule_id] for rule_id in rule_ids)
    return _analyze(path, source, rules)


def _analyze(path: str, source: str, rules: tuple[Rule, ...]) -> _FileResult:
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        where = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
        return _FileResult(path, None, {}, skipped=f"cannot parse{where}: {err}")
    ctx = ModuleContext(path, source, tree)
    facts: dict[str, Any] = {}
    for rule in rules:
        try:
            facts[rule.id] = rule.collect(ctx)
        except RecursionError:
            return _FileResult(path, None, {}, skipped="nested too deeply to analyse")
    return _FileResult(path, facts, _noqa_lines(source))


def _noqa_lines(source: str) -> dict[int, frozenset[str] | None]:
    """Line -> rule ids silenced by an ``# epochal: noqa [EPL00N ...]`` comment (None: all)."""
    if _NOQA_ANYWHERE.search(source) is None:
        return {}
    comments: list[tuple[int, str]] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments.append((token.start[0], token.string))
    except (tokenize.TokenError, SyntaxError):
        comments = [(n, line) for n, line in enumerate(source.splitlines(), start=1)]
    silenced: dict[int, frozenset[str] | None] = {}
    for line, text in comments:
        match = _NOQA.search(text)
        if match is None:
            continue
        codes = frozenset(code.upper() for code in _CODE.findall(match["codes"]))
        silenced[line] = codes or None
    return silenced


def _report(results: list[_FileResult], rules: tuple[Rule, ...]) -> LintReport:
    noqa = {r.path: r.noqa for r in results if r.facts is not None}
    findings: list[Finding] = []
    suppressed = 0
    for rule in rules:
        facts = {r.path: r.facts[rule.id] for r in results if r.facts is not None}
        for path, hit in rule.report(facts):
            silenced = noqa[path]
            lines = {hit.line, hit.end_line} if hit.end_line else {hit.line}
            if any(line in silenced and _silences(silenced[line], rule.id) for line in lines):
                suppressed += 1
                continue
            findings.append(
                Finding(
                    rule=rule.id,
                    problem=rule.problem,
                    path=path,
                    line=hit.line,
                    col=hit.col,
                    message=hit.message,
                    explanation=rule.explanation,
                )
            )
    findings = sorted(set(findings), key=lambda f: (f.path, f.line, f.col, f.rule, f.message))
    skipped = [SkippedFile(r.path, r.skipped) for r in results if r.skipped is not None]
    checked = sum(1 for r in results if r.facts is not None)
    return LintReport(
        findings=findings, files_checked=checked, skipped=skipped, suppressed=suppressed
    )


def _silences(codes: frozenset[str] | None, rule_id: str) -> bool:
    return codes is None or rule_id in codes
