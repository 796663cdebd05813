"""EPL006 (P10): state_dict keys rewritten by hand to drop or add the ``module.`` prefix.

What: in a file that calls ``load_state_dict``, a string operation that rewrites
``module.`` in keys: ``k.replace("module.", "")``, ``k.lstrip("module.")``,
``k.split("module.")[-1]``, ``re.sub("module\\.", "", k)``, or adding it by hand
(``"module." + k``, ``f"module.{k}"``, ``"module.{}".format(k)``, ``"module.%s" % k``).
``k.removeprefix("module.")`` and ``k[7:] if k.startswith("module.")`` are exact and not
reported.

Why: DataParallel and DistributedDataParallel save their model's keys under
``module.``, and the usual repair is a string hack that is subtly wrong:
``replace`` rewrites every ``module.`` in a key, not only the leading one, so a submodule
that is itself called ``module`` (wrappers, EMA copies, ``nn.Sequential`` inside
``self.module``) is renamed too; ``lstrip`` removes any leading run of the characters
``m o d u l e .`` (``"decoder.w"`` loses its ``d``); adding the prefix by hand breaks the
moment the model is wrapped differently. The damage shows up as missing/unexpected keys,
or, with ``strict=False``, as weights silently left at their initial values.

Fix: ``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")``
removes only a leading prefix, in place; better, save the unwrapped model
(``getattr(model, "module", model).state_dict()``) so checkpoints never carry it.
"""

from __future__ import annotations

import ast

from epochal.lint._context import ModuleContext
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import hit

__all__ = ["RULE"]

_STRIPPERS = frozenset({"replace", "lstrip", "strip", "split", "rsplit", "sub"})


def _mentions_prefix(node: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        # the prefix itself ("module." or the regex "module\\."), not any text that
        # merely starts with the word, like f"module {name!r} is missing"
        and node.value.lstrip("^").startswith(("module.", "module\\."))
    )


def _collect(ctx: ModuleContext) -> list[Hit]:
    source = ctx.source
    if "module" not in source or "load_state_dict" not in source:
        return []
    if not any(site.attr == "load_state_dict" for site in ctx.calls):
        return []
    hits = []
    for site in ctx.calls:
        call = site.node
        if site.attr in _STRIPPERS and call.args and isinstance(call.func, ast.Attribute):
            if site.attr == "sub" and (ctx.qualname(call.func) or "") != "re.sub":
                continue
            if _mentions_prefix(call.args[0]):
                hits.append(
                    hit(call, f"{ast.unparse(call)} rewrites more than a leading 'module.'")
                )
        elif site.attr == "format" and _mentions_prefix(_receiver(call)):
            hits.append(hit(call, f"{ast.unparse(call)} adds the 'module.' prefix by hand"))
    for node in ast.walk(ctx.tree):
        if isinstance(node, ast.BinOp) and _mentions_prefix(node.left):
            if isinstance(node.op, ast.Add | ast.Mod):
                hits.append(hit(node, f"{ast.unparse(node)} adds the 'module.' prefix by hand"))
        elif isinstance(node, ast.JoinedStr) and node.values and _mentions_prefix(node.values[0]):
            hits.append(hit(node, f"{ast.unparse(node)} adds the 'module.' prefix by hand"))
    return hits


def _receiver(call: ast.Call) -> ast.expr | None:
    return call.func.value if isinstance(call.func, ast.Attribute) else None


RULE = Rule(
    id="EPL006",
    problem="P10",
    title="'module.' prefix of state_dict keys rewritten with string hacks",
    explanation=(
        "Models saved under DataParallel/DistributedDataParallel carry a 'module.' prefix "
        "on every key, and the usual repair is a string hack that is subtly wrong: "
        "str.replace rewrites every 'module.' in a key, including submodules that are "
        "themselves named 'module'; lstrip removes characters, not a prefix; adding the "
        "prefix by hand breaks as soon as the model is wrapped differently. The result is "
        "missing or unexpected keys or, with strict=False, weights silently left at their "
        "initial values. Fix: torch.nn.modules.utils.consume_prefix_in_state_dict_if_present"
        "(state_dict, 'module.') strips only a leading prefix; better, save the unwrapped "
        "model (getattr(model, 'module', model).state_dict()) so checkpoints never carry it."
    ),
    collect=_collect,
)
