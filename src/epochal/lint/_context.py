"""One parsed file, indexed once for every rule: calls with their scope, imports, bindings.

Rules ask the index instead of walking the tree again: which calls a file makes (with the
callee's dotted name, resolved through the file's imports), in which function, class and
loops each call sits, and where a name gets its value inside a function.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property

__all__ = [
    "Binding",
    "CallSite",
    "FunctionNode",
    "LoopNode",
    "ModuleContext",
    "called_names",
    "dotted",
    "kwarg",
    "last_name",
]

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
LoopNode = ast.For | ast.AsyncFor | ast.While

_FUNCTION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_LOOP_TYPES = (ast.For, ast.AsyncFor, ast.While)
_NO_GRAD = frozenset({"no_grad", "inference_mode"})
# a few aliases so well-known code works even where the import is not in the file itself
_DEFAULT_ALIASES = {"np": "numpy"}


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attribute accesses on a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def last_name(node: ast.AST) -> str | None:
    """The last identifier of a name or attribute access (``c`` for ``a.b.c``), else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def kwarg(call: ast.Call, name: str) -> ast.expr | None:
    """The value of keyword argument ``name`` of ``call``, or None when not given by name."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def called_names(node: ast.AST) -> set[str]:
    """Last names of everything called anywhere under ``node`` (``f`` in ``f()``, ``self.g()``)."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            name = last_name(sub.func)
            if name is not None:
                names.add(name)
    return names


@dataclass(frozen=True, slots=True)
class CallSite:
    """A call in the file, with where it sits.

    Attributes:
        node: the call.
        name: dotted source name of the callee (``np.random.rand``), None for ``f()()`` etc.
        qualname: ``name`` with the file's import aliases resolved (``numpy.random.rand``).
        attr: the last identifier of the callee (``rand``; ``backward`` for ``x.y().backward()``).
        function: innermost enclosing function or lambda, None at module or class level.
        cls: the class whose method ``function`` is, when it is a method.
        loops: loops around the call inside ``function`` (outermost first).
        no_grad: the call runs under ``torch.no_grad()``/``inference_mode()``.
        discarded: the call is a whole expression statement (its result is dropped).
    """

    node: ast.Call
    name: str | None
    qualname: str | None
    attr: str | None
    function: FunctionNode | None
    cls: ast.ClassDef | None
    loops: tuple[LoopNode, ...]
    no_grad: bool
    discarded: bool


@dataclass(frozen=True, slots=True)
class Binding:
    """A place where a name gets a value inside one scope.

    Attributes:
        line: line of the binding.
        kind: ``assign`` (``x = value``; ``value`` is the right-hand side), ``unpack``
            (``x, y = value``), ``for`` (loop target; ``value`` is the iterable), ``for_unpack``
            (a name unpacked from the loop target, ``for x, y in value``), ``arg``
            (parameter; ``value`` is its annotation or None), ``with`` (``as x``), ``aug``
            (``x += value``), ``other`` (import, def, walrus, ...).
        value: the expression the name comes from, as described for ``kind``.
    """

    line: int
    kind: str
    value: ast.expr | None


class ModuleContext:
    """A parsed Python file, indexed for the rules.

    Attributes:
        path: the file's path as reported in findings.
        source: the file's text.
        tree: its syntax tree.
        imports: local name -> fully qualified name, from every import in the file.
        calls: every call in the file, in source order.
        functions: function and method name -> definitions with that name.
        classes: every class definition in the file.
        loops: every ``for``/``while`` loop with its enclosing function.
    """

    def __init__(self, path: str, source: str, tree: ast.Module) -> None:
        self.path = path
        self.source = source
        self.tree = tree
        self.imports: dict[str, str] = {}
        self.calls: list[CallSite] = []
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.classes: list[ast.ClassDef] = []
        self.loops: list[tuple[LoopNode, FunctionNode | None]] = []
        self._bindings: dict[int, dict[str, list[Binding]]] = {}
        self._visit(tree, None, None, (), False)

    # -- names -------------------------------------------------------------------------

    def qualify(self, name: str | None) -> str | None:
        """Resolve the first component of a dotted name through the file's imports."""
        if name is None:
            return None
        head, dot, rest = name.partition(".")
        full = self.imports.get(head) or _DEFAULT_ALIASES.get(head)
        if full is None:
            return name
        return f"{full}{dot}{rest}"

    def qualname(self, node: ast.AST) -> str | None:
        """The import-resolved dotted name of an expression (``numpy.random.rand``), or None."""
        return self.qualify(dotted(node))

    @cached_property
    def method_owner(self) -> dict[int, ast.ClassDef]:
        """id(function node) -> the class it is a method of (direct children of class bodies)."""
        owner = {}
        for cls in self.classes:
            for item in cls.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    owner[id(item)] = cls
        return owner

    def calls_in(self, function: FunctionNode | None) -> list[CallSite]:
        """The calls made directly in ``function`` (not in functions nested in it)."""
        return self._calls_by_function.get(id(function), [])

    @cached_property
    def _calls_by_function(self) -> dict[int, list[CallSite]]:
        table: dict[int, list[CallSite]] = {}
        for site in self.calls:
            table.setdefault(id(site.function), []).append(site)
        return table

    # -- bindings ----------------------------------------------------------------------

    def bindings(self, scope: FunctionNode | ast.Module | None) -> dict[str, list[Binding]]:
        """Name -> where it is bound directly in ``scope`` (None: the module), in source order."""
        scope = self.tree if scope is None else scope
        table = self._bindings.get(id(scope))
        if table is None:
            table = _collect_bindings(scope)
            self._bindings[id(scope)] = table
        return table

    def binding_before(self, name: str, scope: FunctionNode | None, line: int) -> Binding | None:
        """The last binding of ``name`` in ``scope`` at or before ``line`` (else the first one)."""
        found = self.bindings(scope).get(name)
        if not found:
            return None
        before = [b for b in found if b.line <= line]
        return before[-1] if before else found[0]

    # -- the one walk ------------------------------------------------------------------

    def _visit(
        self,
        node: ast.AST,
        function: FunctionNode | None,
        cls: ast.ClassDef | None,
        loops: tuple[LoopNode, ...],
        no_grad: bool,
    ) -> None:
        for child in ast.iter_child_nodes(node):
            self._dispatch(child, node, function, cls, loops, no_grad)

    def _dispatch(
        self,
        node: ast.AST,
        parent: ast.AST,
        function: FunctionNode | None,
        cls: ast.ClassDef | None,
        loops: tuple[LoopNode, ...],
        no_grad: bool,
    ) -> None:
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            self.calls.append(
                CallSite(
                    node=node,
                    name=name,
                    qualname=self.qualify(name),
                    attr=last_name(node.func),
                    function=function,
                    cls=cls,
                    loops=loops,
                    no_grad=no_grad,
                    discarded=isinstance(parent, ast.Expr),
                )
            )
            self._visit(node, function, cls, loops, no_grad)
        elif isinstance(node, _LOOP_TYPES):
            self.loops.append((node, function))
            if isinstance(node, ast.While):
                self._dispatch(node.test, node, function, cls, loops, no_grad)
            else:
                self._dispatch(node.target, node, function, cls, loops, no_grad)
                self._dispatch(node.iter, node, function, cls, loops, no_grad)
            for stmt in node.body:
                self._dispatch(stmt, node, function, cls, (*loops, node), no_grad)
            for stmt in node.orelse:
                self._dispatch(stmt, node, function, cls, loops, no_grad)
        elif isinstance(node, _FUNCTION_TYPES):
            method_of = parent if isinstance(parent, ast.ClassDef) else None
            inner_no_grad = no_grad
            if not isinstance(node, ast.Lambda):
                self.functions.setdefault(node.name, []).append(node)
                inner_no_grad = no_grad or any(_is_no_grad(d) for d in node.decorator_list)
                for deco in node.decorator_list:
                    self._dispatch(deco, node, function, cls, loops, no_grad)
            for default in (*node.args.defaults, *node.args.kw_defaults):
                if default is not None:
                    self._dispatch(default, node, function, cls, loops, no_grad)
            body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else [*node.body]
            for child in body:
                self._dispatch(child, node, node, method_of, (), inner_no_grad)
        elif isinstance(node, ast.ClassDef):
            self.classes.append(node)
            self._visit(node, function, node, (), no_grad)
        elif isinstance(node, ast.With | ast.AsyncWith):
            inner_no_grad = no_grad or any(_is_no_grad(i.context_expr) for i in node.items)
            for item in node.items:
                self._dispatch(item, node, function, cls, loops, no_grad)
            for stmt in node.body:
                self._dispatch(stmt, node, function, cls, loops, inner_no_grad)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.imports[alias.asname] = alias.name
                else:
                    head = alias.name.partition(".")[0]
                    self.imports[head] = head
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            for alias in node.names:
                self.imports[alias.asname or alias.name] = f"{base}.{alias.name}"
        else:
            self._visit(node, function, cls, loops, no_grad)


def _is_no_grad(node: ast.AST) -> bool:
    """``torch.no_grad()``, ``@torch.no_grad``, ``torch.inference_mode()`` and the like."""
    if isinstance(node, ast.Call):
        node = node.func
    return last_name(node) in _NO_GRAD


def _collect_bindings(scope: ast.AST) -> dict[str, list[Binding]]:
    table: dict[str, list[Binding]] = {}

    def bind(target: ast.AST, line: int, kind: str, value: ast.expr | None) -> None:
        if isinstance(target, ast.Name):
            table.setdefault(target.id, []).append(Binding(line, kind, value))
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                inner = {"assign": "unpack", "for": "for_unpack"}.get(kind, kind)
                bind(element, line, inner, value)
        elif isinstance(target, ast.Starred):
            bind(target.value, line, kind, value)

    if isinstance(scope, _FUNCTION_TYPES):
        args = scope.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                bind(ast.Name(id=arg.arg), scope.lineno, "arg", arg.annotation)
        body: list[ast.AST] = [scope.body] if isinstance(scope, ast.Lambda) else list(scope.body)
    else:
        body = list(getattr(scope, "body", []))

    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target, node.lineno, "assign", node.value)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            kind = "assign" if isinstance(node, ast.AnnAssign) else "aug"
            bind(node.target, node.lineno, kind, node.value)
        elif isinstance(node, ast.For | ast.AsyncFor):
            bind(node.target, node.lineno, "for", node.iter)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            bind(node.optional_vars, node.context_expr.lineno, "with", node.context_expr)
        elif isinstance(node, ast.NamedExpr):
            bind(node.target, node.lineno, "assign", node.value)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            table.setdefault(node.name, []).append(Binding(node.lineno, "other", None))
            continue  # a nested scope binds its own names
        if isinstance(node, ast.Lambda):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    for bound in table.values():
        bound.sort(key=lambda b: b.line)
    return table
