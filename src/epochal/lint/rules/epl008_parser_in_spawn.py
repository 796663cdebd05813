"""EPL008 (P12): an ``argparse.ArgumentParser`` carried into ``mp.spawn`` / a new process.

What: an object handed to ``torch.multiprocessing.spawn``/``start_processes`` or
``multiprocessing.Process`` (in its ``args``/``kwargs``, or bound with
``functools.partial``) that holds an ``argparse.ArgumentParser``: the parser itself, a
variable that got one as an attribute (``args.parser = parser``), or an instance of a
class (or dataclass) of the project that stores one (``self.parser = ArgumentParser()``,
a field typed ``ArgumentParser``).

Why: spawn pickles the arguments of every new process, and an ``ArgumentParser`` cannot
be pickled (it holds a function local to its ``__init__``): every DDP job launched with
``mp.spawn`` dies at start-up with ``Can't pickle local object
'ArgumentParser.__init__.<locals>.identity'``, and a ``Process`` does too under the spawn
and forkserver start methods (the default on macOS, Windows and, from Python 3.14, Linux).

Fix: keep configuration as plain data: parse once and pass ``vars(args)`` or a typed
dataclass (epochal's commands parse typed dataclasses with tyro), and drop the parser
from anything that crosses a process boundary. The files of one lint run are one
project: the class may be defined in another file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

from epochal.lint._context import CallSite, ModuleContext, last_name
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import arg, hit, self_attr, where

__all__ = ["RULE"]

_SPAWNERS = frozenset({"spawn", "start_processes", "Process"})


def _is_parser(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Call) and last_name(node.func) == "ArgumentParser"


def _collect(ctx: ModuleContext) -> dict[str, Any]:
    facts: dict[str, Any] = {"classes": {}, "spawns": []}
    source = ctx.source
    if "ArgumentParser" in source:
        facts["classes"] = _parser_classes(ctx)
    if "spawn" in source or "Process" in source or "start_processes" in source:
        for site in ctx.calls:
            if site.attr in _SPAWNERS:
                facts["spawns"].extend(_spawn_facts(ctx, site))
    return facts


def _parser_classes(ctx: ModuleContext) -> dict[str, int]:
    """Classes of this file that store a parser: name -> line where they do."""
    found = {}
    for cls in ctx.classes:
        for node in ast.walk(cls):
            if _stores_parser(ctx, cls, node):
                found[cls.name] = getattr(node, "lineno", cls.lineno)
                break
    return found


def _stores_parser(ctx: ModuleContext, cls: ast.ClassDef, node: ast.AST) -> bool:
    """A dataclass field typed/defaulting to a parser, or ``self.X = <parser>``."""
    if isinstance(node, ast.AnnAssign):
        return "ArgumentParser" in ast.unparse(node.annotation) or _is_parser(node.value)
    if isinstance(node, ast.Assign) and any(self_attr(t) for t in node.targets):
        return _is_parser(node.value) or _parser_name(ctx, node.value, cls, node.lineno)
    return False


def _parser_name(ctx: ModuleContext, value: ast.AST, cls: ast.ClassDef, line: int) -> bool:
    """``value`` is a name bound to ``ArgumentParser(...)`` in the method around ``line``."""
    if not isinstance(value, ast.Name):
        return False
    for item in cls.body:
        if isinstance(item, ast.FunctionDef) and item.lineno <= line <= (item.end_lineno or 0):
            binding = ctx.binding_before(value.id, item, line)
            return binding is not None and _is_parser(binding.value)
    return False


def _spawn_facts(ctx: ModuleContext, site: CallSite) -> list[tuple[Hit, str | None, list[str]]]:
    """(hit, why it is tainted here or None, class names whose instances are passed)."""
    call = site.node
    if site.attr == "Process":
        data, target = [arg(call, 3, "args"), arg(call, 4, "kwargs")], arg(call, 1, "target")
    else:
        data, target = [arg(call, 1, "args")], arg(call, 0, "fn")
    values: list[ast.expr] = []
    for node in data:
        if isinstance(node, ast.Tuple | ast.List):
            values.extend(node.elts)
        elif isinstance(node, ast.Dict):
            values.extend(v for v in node.values if v is not None)
    if isinstance(target, ast.Call) and last_name(target.func) == "partial":
        values.extend(target.args[1:])
        values.extend(k.value for k in target.keywords)
    results = []
    for value in values:
        text = ast.unparse(value)
        tainted, classes = _taint(ctx, site, value)
        if tainted or classes:
            message = f"{text}, passed to {site.name or site.attr}(), "
            results.append((hit(call, message), tainted, classes))
    return results


def _taint(ctx: ModuleContext, site: CallSite, value: ast.expr) -> tuple[str | None, list[str]]:
    """Whether ``value`` holds a parser in this scope, and the classes it is an instance of."""
    if _is_parser(value):
        return "is an ArgumentParser", []
    if isinstance(value, ast.Call):
        return None, [last_name(value.func) or ""]
    if not isinstance(value, ast.Name):
        return None, []
    scope = site.function
    binding = ctx.binding_before(value.id, scope, site.node.lineno)
    if binding is not None and _is_parser(binding.value):
        return f"is the ArgumentParser of line {binding.line}", []
    # ``value.attr = parser`` anywhere in the same scope
    body = ctx.tree if scope is None else scope
    for node in ast.walk(body):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == value.id
                ):
                    stored: ast.expr | None = node.value
                    if isinstance(stored, ast.Name):
                        b = ctx.binding_before(stored.id, scope, node.lineno)
                        stored = b.value if b is not None else None
                    if _is_parser(stored):
                        return f"holds an ArgumentParser (set at line {node.lineno})", []
    if binding is not None and isinstance(binding.value, ast.Call):
        return None, [last_name(binding.value.func) or ""]
    return None, []


def _report(facts: Mapping[str, Any]) -> Iterable[tuple[str, Hit]]:
    classes: dict[str, tuple[str, int]] = {}
    for path, f in facts.items():
        for name, line in f["classes"].items():
            classes.setdefault(name, (path, line))
    for path, f in facts.items():
        for h, tainted, passed in f["spawns"]:
            why = tainted
            if why is None:
                owner = next((c for c in passed if c in classes), None)
                if owner is None:
                    continue
                cpath, cline = classes[owner]
                why = f"is a {owner}, which stores an ArgumentParser ({where(cpath, cline, path)})"
            message = f"{h.message}{why}: spawn pickles it and an ArgumentParser cannot be pickled"
            yield path, Hit(h.line, h.col, message, h.end_line)


RULE = Rule(
    id="EPL008",
    problem="P12",
    title="ArgumentParser passed to a spawned process",
    explanation=(
        "Spawning a process pickles its arguments, and an argparse.ArgumentParser cannot "
        "be pickled (it holds a function local to its __init__), so an object that carries "
        "one makes every mp.spawn DDP job die at start-up with \"Can't pickle local object "
        "'ArgumentParser.__init__.<locals>.identity'\" (a multiprocessing.Process too, "
        "under the spawn and forkserver start methods). Fix: keep configuration plain, "
        "picklable data: pass vars(args) or a typed dataclass (epochal's commands parse "
        "typed dataclasses with tyro) and keep the parser out of anything sent to another "
        "process."
    ),
    collect=_collect,
    report=_report,
)
