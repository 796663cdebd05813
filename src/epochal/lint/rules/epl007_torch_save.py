"""EPL007 (P9): a checkpoint written with ``torch.save`` straight to its final path.

What: ``torch.save(obj, path)`` that saves a checkpoint (the saved object or the path
mentions a state, checkpoint, ckpt, model, optimizer, weights, snapshot, best, last or
epoch, or the function around it does), run from a training loop: inside a loop, or inside a function that some loop of
the project calls (``save_checkpoint(...)`` called every epoch), in a function that
never renames a temporary file into place (``os.replace``, ``os.rename``,
``shutil.move``, ``Path.replace``/``rename``).

Why: ``torch.save`` opens the destination and writes it in place. A crash, a Ctrl+C, a
pre-empted node or a full disk during the write leaves a truncated file exactly where
the last good checkpoint was: the run that was meant to resume cannot, and days of
training are gone. The risk comes back at every save of a long run.

Fix: ``epochal.Checkpointer(dir, keep_last=3).save(step, model=..., optimizer=...)``
writes to a temporary file in the same directory, fsyncs it, ``os.replace``-s it into
place and only then prunes old checkpoints, and also saves the RNG states and data
position a resume needs. By hand: ``torch.save(obj, tmp); os.replace(tmp, path)``.
The files of one lint run are one project: the loop may be in another file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

from epochal.lint._context import CallSite, ModuleContext
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import arg, hit, where

__all__ = ["RULE"]

_CHECKPOINT_WORDS = (
    "state", "checkpoint", "ckpt", "model", "optim", "weights", "snapshot", "best",
    "last", "epoch",
)  # fmt: skip
_TEMPORARY_WORDS = ("tmp", "temp", "partial", "bytesio", "buffer", "buf")
_RENAMES = frozenset({"os.replace", "os.rename", "shutil.move"})
# calls into these are never the project's own checkpoint helpers
_LIBRARIES = frozenset(
    {"torch", "numpy", "os", "shutil", "json", "pickle", "math", "random", "time", "logging"}
)


def _collect(ctx: ModuleContext) -> dict[str, Any]:
    facts: dict[str, Any] = {"saves": [], "loop_calls": {}}
    if "save" not in ctx.source:
        return facts
    for site in ctx.calls:
        if site.loops and site.attr and site.attr not in facts["loop_calls"]:
            root = (site.qualname or "").partition(".")[0]
            if root not in _LIBRARIES:  # a project function, not torch.save or np.save
                facts["loop_calls"][site.attr] = site.node.lineno
        if site.qualname != "torch.save" or _atomic(ctx, site):
            continue
        obj, path = arg(site.node, 0, "obj"), arg(site.node, 1, "f")
        if obj is None or path is None:
            continue
        obj_text, path_text = ast.unparse(obj).lower(), ast.unparse(path).lower()
        if any(w in path_text for w in _TEMPORARY_WORDS):
            continue
        name = getattr(site.function, "name", None)
        text = f"{obj_text} {path_text} {(name or '').lower()}"
        if not any(w in text for w in _CHECKPOINT_WORDS):
            continue
        facts["saves"].append(
            (hit(site.node, f"torch.save(..., {ast.unparse(path)}) writes the checkpoint in place"),
             bool(site.loops), name)
        )  # fmt: skip
    return facts


def _atomic(ctx: ModuleContext, site: CallSite) -> bool:
    """The function also renames a file into place (``torch.save(tmp); os.replace``)."""
    for other in ctx.calls_in(site.function):
        if other.qualname in _RENAMES:
            return True
        if other.attr in ("replace", "rename") and len(other.node.args) == 1:
            return True  # pathlib.Path.replace(target); str.replace takes two
    return False


def _report(facts: Mapping[str, Any]) -> Iterable[tuple[str, Hit]]:
    loop_calls: dict[str, tuple[str, int]] = {}
    for path, f in facts.items():
        for name, line in f["loop_calls"].items():
            loop_calls.setdefault(name, (path, line))
    for path, f in facts.items():
        for h, in_loop, function in f["saves"]:
            if in_loop:
                yield path, Hit(h.line, h.col, f"{h.message} inside a loop", h.end_line)
            elif function in loop_calls:
                caller_path, caller_line = loop_calls[function]
                message = (
                    f"{h.message} in {function}(), which the loop at "
                    f"{where(caller_path, caller_line, path)} calls"
                )
                yield path, Hit(h.line, h.col, message, h.end_line)


RULE = Rule(
    id="EPL007",
    problem="P9",
    title="checkpoint saved in place (not atomic)",
    explanation=(
        "torch.save opens the destination and writes it in place, so a crash, Ctrl+C, "
        "pre-emption or full disk during the write leaves a truncated file exactly where "
        "the last good checkpoint was, and the run cannot resume; in a training loop the "
        "risk returns at every save. Fix: epochal.Checkpointer(dir, keep_last=3).save(step, "
        "model=..., optimizer=...) writes a temporary file in the same directory, fsyncs "
        "it, os.replace()s it into place, then prunes old checkpoints, and saves the RNG "
        "states and data position a resume needs; by hand, torch.save(obj, tmp) then "
        "os.replace(tmp, path)."
    ),
    collect=_collect,
    report=_report,
)
