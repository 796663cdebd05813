"""EPL002 (P10): a ``DistributedSampler`` that nothing tells which epoch it is.

What: a ``DistributedSampler`` (shuffling, i.e. ``shuffle`` not literally False) built in
a project that runs an epoch loop (a loop with a ``for`` loop inside it) and never calls
``set_epoch`` on anything.

Why: ``DistributedSampler`` seeds its shuffle with ``seed + epoch``, and ``epoch`` only
changes when ``set_epoch`` is called. Without it every epoch sees exactly the same order
on every rank: the "shuffled" run is trained on one fixed permutation, which quietly
hurts generalisation. Nothing crashes and nothing warns.

Fix: with epochal, ``epochal.Loader`` advances its own epoch each time an epoch's pass
ends, and its order is a function of (seed, epoch), so there is nothing to forget.
One-line fix otherwise: ``sampler.set_epoch(epoch)`` at the top of the epoch loop.
The files of one lint run are one project: a ``set_epoch`` call anywhere in it counts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

from epochal.lint._context import ModuleContext
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import arg, hit, is_constant, where

__all__ = ["RULE"]


def _collect(ctx: ModuleContext) -> dict[str, Any]:
    facts: dict[str, Any] = {"samplers": [], "set_epoch": False, "epoch_loop": None}
    if "set_epoch" in ctx.source:
        facts["set_epoch"] = any(site.attr == "set_epoch" for site in ctx.calls)
    if "DistributedSampler" in ctx.source:
        for site in ctx.calls:
            if site.attr == "DistributedSampler" and not is_constant(
                arg(site.node, 3, "shuffle"), False
            ):
                facts["samplers"].append(hit(site.node, f"{site.name}(...)"))
    for loop, _ in ctx.loops:
        if any(isinstance(n, ast.For | ast.AsyncFor) for b in loop.body for n in ast.walk(b)):
            facts["epoch_loop"] = loop.lineno
            break
    return facts


def _report(facts: Mapping[str, Any]) -> Iterable[tuple[str, Hit]]:
    if any(f["set_epoch"] for f in facts.values()):
        return
    loops = [(path, f["epoch_loop"]) for path, f in facts.items() if f["epoch_loop"]]
    if not loops:
        return
    for path, f in facts.items():
        # prefer an epoch loop in the sampler's own file when there is one
        loop_path, loop_line = next(((p, n) for p, n in loops if p == path), loops[0])
        for h in f["samplers"]:
            message = (
                f"{h.message} repeats one order every epoch: the epoch loop at "
                f"{where(loop_path, loop_line, path)} runs, but nothing in the project calls "
                "set_epoch"
            )
            yield path, Hit(h.line, h.col, message, h.end_line)


RULE = Rule(
    id="EPL002",
    problem="P10",
    title="DistributedSampler without set_epoch",
    explanation=(
        "DistributedSampler shuffles with seed + epoch, and its epoch only changes when "
        "set_epoch() is called; without it every epoch visits the data in the very same "
        "order on every rank, silently. Fix: epochal.Loader computes the order from "
        "(seed, epoch) and advances the epoch itself at the end of each pass, so there is "
        "nothing to forget; with a plain DataLoader call sampler.set_epoch(epoch) at the "
        "start of every epoch."
    ),
    collect=_collect,
    report=_report,
)
