"""Small helpers shared by the rules."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from epochal.lint._context import CallSite, FunctionNode, ModuleContext, last_name
from epochal.lint._model import Hit

__all__ = [
    "arg",
    "class_methods",
    "hit",
    "is_constant",
    "module_functions",
    "reachable_functions",
    "self_attr",
    "where",
]


def hit(node: ast.AST, message: str) -> Hit:
    """A hit at ``node`` (1-based column; the node's last line also accepts ``noqa``)."""
    line = getattr(node, "lineno", 1)
    return Hit(
        line=line,
        col=getattr(node, "col_offset", 0) + 1,
        message=message,
        end_line=getattr(node, "end_lineno", None) or line,
    )


def where(path: str, line: int, here: str) -> str:
    """``line 12`` when ``path`` is the file being reported on, else ``train.py:12``."""
    return f"line {line}" if path == here else f"{path}:{line}"


def is_constant(node: ast.AST | None, value: object) -> bool:
    """``node`` is the literal ``value`` (``0``, ``False``, ``None``...), compared by type too."""
    return (
        isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value
    )


def arg(call: ast.Call, position: int, name: str) -> ast.expr | None:
    """Argument ``name`` of ``call``, given by keyword or at ``position`` (0-based)."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    positional = call.args
    if any(isinstance(a, ast.Starred) for a in positional[: position + 1]):
        return None
    return positional[position] if position < len(positional) else None


def self_attr(node: ast.AST) -> str | None:
    """``X`` for the expression ``self.X``, else None."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    ):
        return node.attr
    return None


def module_functions(ctx: ModuleContext) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Top-level functions of the module by name (the last definition wins)."""
    return {
        node.name: node
        for node in ctx.tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def class_methods(
    ctx: ModuleContext, cls: ast.ClassDef
) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Methods of ``cls``, including those inherited from base classes in the same file."""
    by_name = {c.name: c for c in ctx.classes}
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    seen: set[str] = set()

    def add(current: ast.ClassDef) -> None:
        if current.name in seen:
            return
        seen.add(current.name)
        for base in reversed(current.bases):
            base_cls = by_name.get(last_name(base) or "")
            if base_cls is not None:
                add(base_cls)
        for item in current.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                methods[item.name] = item

    add(cls)
    return methods


def reachable_functions(
    ctx: ModuleContext,
    start: FunctionNode,
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef],
) -> Iterator[tuple[FunctionNode, tuple[str, ...]]]:
    """``start`` and the functions it calls in this file (``self.m()`` and module functions).

    Yields each function once with the chain of names that leads to it from ``start``.
    """
    functions = module_functions(ctx)
    todo: list[tuple[FunctionNode, tuple[str, ...]]] = [(start, ())]
    seen = {id(start)}
    while todo:
        function, via = todo.pop(0)
        yield function, via
        for site in ctx.calls_in(function):
            target = _local_target(site, methods, functions)
            if target is not None and id(target) not in seen:
                seen.add(id(target))
                todo.append((target, (*via, site.name or target.name)))
        # functions nested in this one run when it calls them; visit them too
        for node in ast.walk(function):
            nested = isinstance(node, ast.FunctionDef | ast.Lambda) and node is not function
            if nested and isinstance(node, ast.FunctionDef | ast.Lambda) and id(node) not in seen:
                seen.add(id(node))
                todo.append((node, via))


def _local_target(
    site: CallSite,
    methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef],
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef],
) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    func = site.node.func
    name = self_attr(func)
    if name is not None:
        return methods.get(name)
    if isinstance(func, ast.Name):
        return functions.get(func.id)
    return None
