"""EPL001 (P6): random augmentation in a Dataset that every DataLoader worker repeats.

What: numpy randomness inside ``__getitem__``/``__getitems__``/``__iter__`` of a Dataset
class (or a method or module function they call), when the project builds a DataLoader
whose ``num_workers`` is not literally 0 and which has no ``worker_init_fn`` that reseeds
numpy. Two shapes are reported:

* the global RNG (``np.random.rand()``, ``numpy.random.randint()``, ``from numpy.random
  import choice``...);
* a generator the dataset owns (``self.rng = np.random.default_rng(seed)`` in
  ``__init__``, also ``RandomState``, ``random.Random`` and ``torch.Generator``) and uses
  when loading a sample, when the DataLoader has no ``worker_init_fn`` at all.

Why: DataLoader workers are copies of the parent process. torch older than 1.9 left
numpy's global RNG as the parent had it, so every worker drew the same "random" crops,
every epoch (the bug a study found in over 95% of the public projects that could have
it). torch 1.9+ reseeds the global RNG per worker, but the augmentation a sample gets
then depends on which worker loads it and on ``num_workers`` (P7), and is not restored
by a resume. A generator stored on the dataset is copied into every worker with the same
state on every torch version: each worker draws the very same sequence (verified by the
test suite). Not reported: a ``Generator`` passed in as an argument, a generator created
inside ``__getitem__`` (``np.random.default_rng((seed, index))``), datasets that reseed
numpy themselves, and loaders whose worker count or ``worker_init_fn`` is not visible
(``**kwargs``).

Fix: with epochal, load through ``epochal.Loader`` and take the ``rng`` argument of the
transform: it is derived from (seed, epoch, record index), so a sample's augmentation is
the same whatever worker or rank loads it, and resumes exactly. One-line fix otherwise:
``worker_init_fn=lambda _: np.random.seed(torch.initial_seed() % 2**32)`` (and create
owned generators from ``torch.utils.data.get_worker_info().seed`` inside the worker).
The files of one lint run are one project: the Dataset and the DataLoader may be in
different files.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

from epochal.lint._context import ModuleContext, last_name
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import (
    arg,
    class_methods,
    hit,
    is_constant,
    reachable_functions,
    self_attr,
    where,
)

__all__ = ["RULE"]

_ENTRY_POINTS = ("__getitem__", "__getitems__", "__iter__")
# numpy.random names that are not draws from the global RNG
_NOT_GLOBAL_DRAWS = frozenset(
    {
        "BitGenerator", "Generator", "MT19937", "PCG64", "PCG64DXSM", "Philox",
        "RandomState", "SFC64", "SeedSequence", "default_rng", "get_bit_generator",
        "get_state", "seed", "set_bit_generator", "set_state",
    }
)  # fmt: skip
_NUMPY_RESEED = frozenset({"numpy.random.seed", "numpy.random.set_state"})
# well-known helpers that seed numpy too (lightning, transformers, mmengine, timm, ...)
_KNOWN_SEEDERS = frozenset(
    {"seed_everything", "set_seed", "set_random_seed", "seed_all", "setup_seed", "seed_worker"}
)
_RNG_CONSTRUCTORS = frozenset(
    {
        "numpy.random.default_rng", "numpy.random.RandomState", "numpy.random.Generator",
        "random.Random", "torch.Generator",
    }
)  # fmt: skip
# base classes that make a class a dataset besides anything named *Dataset
_DATASET_BASES = frozenset({"ImageFolder", "DatasetFolder"})


def _collect(ctx: ModuleContext) -> dict[str, Any]:
    source = ctx.source
    facts: dict[str, Any] = {"classes": [], "loaders": [], "reseed": set(), "plain": set()}
    if "DataLoader" in source:
        facts["loaders"] = _loaders(ctx)
    if ("seed" in source or "worker" in source) and ctx.functions:
        facts["reseed"], facts["plain"] = _seeders(ctx)
    if ctx.classes and ("random" in source or "Generator" in source):
        facts["classes"] = [_dataset_class(ctx, cls) for cls in ctx.classes]
    else:
        facts["classes"] = [
            (cls.name, tuple(last_name(b) or "" for b in cls.bases), [], []) for cls in ctx.classes
        ]
    return facts


def _loaders(ctx: ModuleContext) -> list[tuple[int, tuple[str, Any]]]:
    """Multi-process DataLoaders: (line, how their worker_init_fn looks)."""
    loaders = []
    for site in ctx.calls:
        if site.attr != "DataLoader":
            continue
        call = site.node
        has_kwargs = any(k.arg is None for k in call.keywords)
        workers = arg(call, 5, "num_workers")
        if workers is None:
            continue  # default 0, or hidden in **kwargs: nothing to say
        if is_constant(workers, 0):
            continue
        init = arg(call, 10, "worker_init_fn")
        if init is None or is_constant(init, None):
            shape: tuple[str, Any] = ("unknown", None) if has_kwargs else ("none", None)
        elif isinstance(init, ast.Lambda):
            shape = ("lambda", _reseeds_numpy(ctx, init, set()))
        else:
            if isinstance(init, ast.Call) and last_name(init.func) == "partial" and init.args:
                init = init.args[0]
            name = last_name(init)
            shape = ("name", name) if name else ("unknown", None)
        loaders.append((call.lineno, shape))
    return loaders


def _reseeds_numpy(ctx: ModuleContext, function: ast.AST, local: set[str]) -> bool:
    for sub in ast.walk(function):
        if isinstance(sub, ast.Call):
            name = ctx.qualname(sub.func)
            if name in _NUMPY_RESEED:
                return True
            callee = last_name(sub.func)
            if callee in local or (callee in _KNOWN_SEEDERS and callee not in ctx.functions):
                return True
    return False


def _seeders(ctx: ModuleContext) -> tuple[set[str], set[str]]:
    """Function names of this file that reseed numpy, and those that do not."""
    reseed: set[str] = set()
    callees: dict[str, set[str]] = {}
    for name, defs in ctx.functions.items():
        called = callees.setdefault(name, set())
        for function in defs:
            for site in ctx.calls_in(function):
                if site.qualname in _NUMPY_RESEED or (
                    site.attr in _KNOWN_SEEDERS and site.attr not in ctx.functions
                ):
                    reseed.add(name)
                if site.attr is not None:
                    called.add(site.attr)
    changed = True
    while changed:  # a function calling a reseeding function of this file reseeds too
        changed = False
        for name, called in callees.items():
            if name not in reseed and called & reseed:
                reseed.add(name)
                changed = True
    return reseed, set(ctx.functions) - reseed


def _dataset_class(
    ctx: ModuleContext, cls: ast.ClassDef
) -> tuple[str, tuple[str, ...], list[tuple[Hit, str]], list[tuple[Hit, str]]]:
    """(name, base names, global-RNG draws, owned-generator uses) of one class."""
    bases = tuple(last_name(b) or "" for b in cls.bases)
    global_hits: list[tuple[Hit, str]] = []
    owned_hits: list[tuple[Hit, str]] = []
    methods = class_methods(ctx, cls)
    if not any(entry in methods for entry in _ENTRY_POINTS):
        return cls.name, bases, global_hits, owned_hits
    owned = _owned_generators(ctx, methods)
    for entry in _ENTRY_POINTS:
        method = methods.get(entry)
        if method is None:
            continue
        reached = list(reachable_functions(ctx, method, methods))
        sites = [(s, via) for function, via in reached for s in ctx.calls_in(function)]
        reseeds = any(s.qualname in _NUMPY_RESEED for s, _ in sites)
        for site, via in sites:
            where_ = f"{cls.name}.{entry}" + "".join(f" -> {v}" for v in via)
            qualname = site.qualname or ""
            head, _, fn = qualname.rpartition(".")
            if head == "numpy.random" and fn not in _NOT_GLOBAL_DRAWS and not reseeds:
                msg = f"{site.name}() in {where_} draws from numpy's global RNG"
                global_hits.append((hit(site.node, msg), cls.name))
                continue
            for name, line in owned.items():
                if _uses_attr(site.node, name):
                    msg = (
                        f"self.{name} in {where_} is a generator created once in __init__ "
                        f"(line {line})"
                    )
                    owned_hits.append((hit(site.node, msg), cls.name))
                    break
    return cls.name, bases, global_hits, owned_hits


def _owned_generators(
    ctx: ModuleContext, methods: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]
) -> dict[str, int]:
    """``self.X`` attributes set to a new generator in ``__init__`` and never re-set elsewhere."""
    init = methods.get("__init__")
    if init is None:
        return {}
    owned: dict[str, int] = {}
    for node in ast.walk(init):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            value = node.value
            while isinstance(value.func, ast.Attribute) and isinstance(value.func.value, ast.Call):
                value = value.func.value  # torch.Generator().manual_seed(0)
            if ctx.qualname(value.func) in _RNG_CONSTRUCTORS:
                for target in node.targets:
                    name = self_attr(target)
                    if name is not None:
                        owned[name] = node.lineno
    for method_name, method in methods.items():
        if method_name == "__init__":
            continue
        for node in ast.walk(method):
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    owned.pop(self_attr(target) or "", None)  # (re)made per worker: fine
    return owned


def _uses_attr(call: ast.Call, name: str) -> bool:
    """``self.<name>.f(...)`` or ``f(..., self.<name>, ...)``."""
    func = call.func
    if isinstance(func, ast.Attribute) and self_attr(func.value) == name:
        return True
    values = [*call.args, *(k.value for k in call.keywords)]
    return any(self_attr(v) == name for v in values)


def _report(facts: Mapping[str, Any]) -> Iterable[tuple[str, Hit]]:
    reseed = set().union(*(f["reseed"] for f in facts.values()))
    plain = set().union(*(f["plain"] for f in facts.values()))
    no_reseed: tuple[str, int] | None = None  # a loader whose workers keep numpy's state
    no_init: tuple[str, int] | None = None  # a loader with no worker_init_fn at all
    for path, f in facts.items():
        for line, (kind, value) in f["loaders"]:
            if kind == "none":
                no_init = no_init or (path, line)
            unseeded = (
                kind == "none"
                or (kind == "lambda" and not value)
                or (kind == "name" and value not in reseed and value in plain)
            )
            if unseeded:
                no_reseed = no_reseed or (path, line)
    if no_reseed is None and no_init is None:
        return
    datasets = _dataset_names(facts)
    for path, f in facts.items():
        for name, _, global_hits, owned_hits in f["classes"]:
            if name not in datasets:
                continue
            if no_reseed is not None:
                for h, _ in global_hits:
                    loader = where(no_reseed[0], no_reseed[1], path)
                    yield path, _with(h, f"; the DataLoader at {loader} has workers and no "
                                         "worker_init_fn that reseeds numpy")  # fmt: skip
            if no_init is not None:
                for h, _ in owned_hits:
                    loader = where(no_init[0], no_init[1], path)
                    yield path, _with(h, f"; every worker of the DataLoader at {loader} "
                                         "gets a copy with the same state")  # fmt: skip


def _dataset_names(facts: Mapping[str, Any]) -> set[str]:
    bases_of: dict[str, set[str]] = {}
    for f in facts.values():
        for name, bases, _, _ in f["classes"]:
            bases_of.setdefault(name, set()).update(bases)
    datasets = {
        name
        for name, bases in bases_of.items()
        if name.lower().endswith("dataset")
        or any(b.endswith("Dataset") or b in _DATASET_BASES for b in bases)
    }
    changed = True
    while changed:  # subclasses of the project's own dataset classes
        changed = False
        for name, bases in bases_of.items():
            if name not in datasets and bases & datasets:
                datasets.add(name)
                changed = True
    return datasets


def _with(h: Hit, suffix: str) -> Hit:
    return Hit(line=h.line, col=h.col, message=h.message + suffix, end_line=h.end_line)


RULE = Rule(
    id="EPL001",
    problem="P6",
    title="numpy randomness in a Dataset repeats across DataLoader workers",
    explanation=(
        "DataLoader workers are copies of the parent process. A generator the dataset "
        "creates in __init__ is copied into every worker with the same state, so all "
        "workers draw the same 'random' augmentations; numpy's global RNG did the same "
        "before torch 1.9 and, since then, gives augmentations that depend on which worker "
        "loads a sample and on num_workers, and that a resume cannot replay. Fix: load "
        "with epochal.Loader and use the rng argument of the transform (derived from seed, "
        "epoch and record index, identical whatever worker loads the record), or at least "
        "pass worker_init_fn=lambda _: np.random.seed(torch.initial_seed() % 2**32) and "
        "create per-worker generators from torch.utils.data.get_worker_info().seed."
    ),
    collect=_collect,
    report=_report,
)
