"""EPL005 (P11): ``backward()`` and ``optimizer.step()`` in a loop that never zeroes grads.

What: a loop that contains both a ``.backward(...)`` call (``loss.backward()``,
``scaler.scale(loss).backward()``, ``accelerator.backward(loss)``) and an optimizer step
(``optimizer.step()``, ``opt_g.step()``, ``scaler.step(optimizer)``), where nothing in
that loop resets the gradients: no ``zero_grad`` call on any object (``optimizer``,
``model``, with or without ``set_to_none``, under an ``if`` for gradient accumulation or
not), no ``p.grad = None``, no ``p.grad.zero_()``, and no call of a function of the same
file that does one of these. The loop checked is the innermost one holding both calls,
so zeroing once per epoch around a per-batch step is still reported.

Why: ``backward()`` adds to ``.grad``; it never overwrites it. Without a reset each step
applies the sum of all gradients so far: the effective learning rate grows every step
and training diverges or stalls, with no error.

Fix: ``optimizer.zero_grad(set_to_none=True)`` once per optimizer step (before the
forward pass, or right after ``step()``); for gradient accumulation, inside the same
``if`` that steps.
"""

from __future__ import annotations

import ast

from epochal.lint._context import CallSite, LoopNode, ModuleContext, last_name
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import hit, module_functions

__all__ = ["RULE"]


def _collect(ctx: ModuleContext) -> list[Hit]:
    if "backward" not in ctx.source or ".step(" not in ctx.source:
        return []
    backwards: dict[int, list[CallSite]] = {}
    steps: dict[int, list[CallSite]] = {}
    for site in ctx.calls:
        if not site.loops:
            continue
        if site.attr == "backward":
            backwards.setdefault(id(site.function), []).append(site)
        elif site.attr == "step" and _is_optimizer_step(site.node):
            steps.setdefault(id(site.function), []).append(site)
    zeroing: set[str] | None = None  # computed on first need: it walks every function
    hits = []
    reported: set[int] = set()
    for scope, step_sites in steps.items():
        for step in step_sites:
            for backward in backwards.get(scope, []):
                loop = _innermost_common(backward.loops, step.loops)
                if loop is None or id(loop) in reported or _resets_grads(loop, set()):
                    continue
                if zeroing is None:
                    zeroing = _zeroing_functions(ctx)
                if zeroing and _resets_grads(loop, zeroing):
                    continue
                reported.add(id(loop))
                hits.append(
                    hit(
                        step.node,
                        f"{ast.unparse(step.node)} after {ast.unparse(backward.node)} "
                        f"(line {backward.node.lineno}) in the loop at line {loop.lineno}, "
                        "which never zeroes the gradients: they accumulate across steps",
                    )
                )
    return hits


def _is_optimizer_step(call: ast.Call) -> bool:
    func = call.func
    assert isinstance(func, ast.Attribute)
    owner = ast.unparse(func.value).lower()
    if "sched" in owner:
        return False
    return "opt" in owner or ("scaler" in owner and bool(call.args))


def _innermost_common(a: tuple[LoopNode, ...], b: tuple[LoopNode, ...]) -> LoopNode | None:
    common = None
    for x, y in zip(a, b, strict=False):
        if x is not y:
            break
        common = x
    return common


def _zeroing_functions(ctx: ModuleContext) -> set[str]:
    """Functions and methods of this file that reset gradients themselves."""
    names = set()
    candidates = dict(module_functions(ctx))
    for cls in ctx.classes:
        for item in cls.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                candidates[item.name] = item
    for name, function in candidates.items():
        if _resets_grads(function, set()):
            names.add(name)
    return names


def _resets_grads(node: ast.AST, zeroing: set[str]) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            name = last_name(sub.func) or ""
            if "zero_grad" in name or name in zeroing:
                return True
            if name in ("zero_", "detach_", "fill_") and _is_grad(sub.func):
                return True
        elif isinstance(sub, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == "grad" for t in sub.targets
        ):
            return True  # p.grad = None
    return False


def _is_grad(func: ast.expr) -> bool:
    """``p.grad.zero_`` or ``p.grad.data.zero_``."""
    node = func.value if isinstance(func, ast.Attribute) else None
    while isinstance(node, ast.Attribute):
        if node.attr == "grad":
            return True
        node = node.value
    return False


RULE = Rule(
    id="EPL005",
    problem="P11",
    title="optimizer steps without zero_grad",
    explanation=(
        "backward() adds to .grad and never overwrites it, so a loop that steps the "
        "optimizer without resetting the gradients applies the sum of every gradient so "
        "far: the effective learning rate grows with each step and training diverges or "
        "stalls without any error. Fix: call optimizer.zero_grad(set_to_none=True) once per "
        "optimizer step (before the forward pass, or right after step()); with gradient "
        "accumulation, in the same if-block that steps."
    ),
    collect=_collect,
)
