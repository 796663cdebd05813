"""EPL004 (P11): a loss tensor appended to a list in a loop, with its whole graph.

What: ``something.append(loss)`` inside a loop, where ``loss`` is a loss tensor still
attached to the autograd graph: a name containing ``loss`` whose value comes from a call
or tensor arithmetic (``criterion(out, y)``, ``loss_a + 0.1 * loss_b``, ``out.loss``),
not from ``.item()``, ``.detach()``, ``float()`` and the like; also ``out.loss`` or
``criterion(...)`` appended directly. Appends under ``torch.no_grad()`` /
``inference_mode()`` (block or decorator) are not reported: there is no graph to keep.

Why: a loss tensor holds a reference to the autograd graph that produced it, and with it
every activation saved for the backward pass. A list of them keeps every iteration's
graph alive: GPU memory grows each step until the run dies with out-of-memory, often
hours in, and each later ``sum(losses)`` also forces a device sync.

Fix: append ``loss.item()`` (a Python float) or ``loss.detach()``; epochal's
Checkpointer takes metrics as plain floats (``metrics={"val_loss": v}``).
"""

from __future__ import annotations

import ast

from epochal.lint._context import CallSite, FunctionNode, ModuleContext, last_name
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import hit

__all__ = ["RULE"]

# calls that turn a tensor into something without a graph
_DETACHING = frozenset({"item", "detach", "tolist", "numpy", "float", "int", "round"})
# builtins and numpy reductions whose result is taken to be a plain number
_PLAIN_BUILTINS = frozenset({"len", "sum", "min", "max", "abs", "average", "median"})
# tensor methods that keep the graph: ``loss.mean()`` is a tensor if ``loss`` is one
_REDUCTIONS = frozenset({"mean", "sum", "cpu", "cuda", "to", "float", "squeeze", "view"})


def _collect(ctx: ModuleContext) -> list[Hit]:
    if "append" not in ctx.source or "loss" not in ctx.source.lower():
        return []
    hits = []
    for site in ctx.calls:
        if (
            site.attr != "append"
            or not site.discarded
            or not site.loops
            or site.no_grad
            or len(site.node.args) != 1
        ):
            continue
        value = site.node.args[0]
        if _is_loss_tensor(ctx, site, value):
            text = ast.unparse(value)
            owner = ast.unparse(site.node.func)
            hits.append(
                hit(
                    site.node,
                    f"{owner}({text}) keeps the autograd graph of every iteration alive; "
                    f"append {text}.item() or {text}.detach()",
                )
            )
    return hits


def _is_loss_tensor(ctx: ModuleContext, site: CallSite, value: ast.expr) -> bool:
    if isinstance(value, ast.Name) and "loss" not in value.id.lower():
        return False
    if isinstance(value, ast.Attribute) and "loss" not in value.attr.lower():
        return False
    if isinstance(value, ast.Call) and not _is_loss_call(ctx, value):
        return False
    return _tensor(ctx, site.function, value, site.node.lineno, depth=0)


def _is_loss_call(ctx: ModuleContext, call: ast.Call) -> bool:
    callee = (last_name(call.func) or "").lower()
    return (
        "loss" in callee
        or "criterion" in callee
        or (ctx.qualname(call.func) or "").startswith(("torch.nn.functional.", "F."))
    )


def _tensor(
    ctx: ModuleContext, function: FunctionNode | None, node: ast.expr, line: int, depth: int
) -> bool:
    """``node`` evaluates to a tensor that still carries a graph (as far as can be told)."""
    if depth > 5:
        return False
    if isinstance(node, ast.Call):
        name = last_name(node.func) or ""
        if name in _DETACHING or (isinstance(node.func, ast.Name) and name in _PLAIN_BUILTINS):
            return False
        if isinstance(node.func, ast.Attribute) and name in _REDUCTIONS:
            receiver = node.func.value
            if isinstance(receiver, ast.Call):  # ``model(x).sum()``: a tensor unless numpy's
                root = (ctx.qualname(receiver.func) or "").partition(".")[0]
                if root not in ("numpy", "math", "statistics"):
                    return True
            return _tensor(ctx, function, receiver, line, depth + 1)
        qualname = ctx.qualname(node.func) or ""
        return _is_loss_call(ctx, node) or qualname.startswith("torch.")
    if isinstance(node, ast.Attribute):
        return node.attr == "loss" or node.attr.endswith("_loss")
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and "loss" in str(key.value)
    if isinstance(node, ast.BinOp):
        return _tensor(ctx, function, node.left, line, depth + 1) or _tensor(
            ctx, function, node.right, line, depth + 1
        )
    if isinstance(node, ast.UnaryOp):
        return _tensor(ctx, function, node.operand, line, depth + 1)
    if not isinstance(node, ast.Name):
        return False
    found = ctx.bindings(function).get(node.id, [])
    before = [b for b in found if b.line <= line] or found[:1]
    for binding in reversed(before):
        if binding.value is None:
            return False
        if binding.kind == "aug":
            if _tensor(ctx, function, binding.value, binding.line, depth + 1):
                return True
            continue  # ``total += x.item()``: look at the first value
        if binding.kind == "assign":
            return _tensor(ctx, function, binding.value, binding.line, depth + 1)
        if binding.kind == "unpack":
            # ``logits, loss = model(x, y)``: the loss half of a model's output
            return "loss" in node.id.lower() and isinstance(binding.value, ast.Call)
        return False
    return False


RULE = Rule(
    id="EPL004",
    problem="P11",
    title="loss tensor appended to a list",
    explanation=(
        "A loss tensor holds a reference to the autograd graph that produced it, and with "
        "it every activation saved for backward; a list of loss tensors keeps the graph of "
        "every iteration alive, so memory grows step after step until the run dies with "
        "out-of-memory, and summing the list later forces a device sync. Fix: append "
        "loss.item() (a float) or loss.detach(); epochal's Checkpointer records metrics as "
        "plain floats."
    ),
    collect=_collect,
)
