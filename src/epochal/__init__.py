"""epochal: random-access training data and exactly resumable runs for PyTorch.

Public names are imported lazily on first use, so ``import epochal`` stays fast and does
not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from epochal._errors import Error, StateError

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "IdentityOrder": "epochal.order",
    "Loader": "epochal.loader",
    "Mixture": "epochal.mixture",
    "Plan": "epochal.plan",
    "Sampler": "epochal.sampling",
    "ShuffledOrder": "epochal.order",
    "Source": "epochal.sources",
    "WeightedSampler": "epochal.sampling",
    "balanced": "epochal.sampling",
    "concat": "epochal.sources",
    "from_arrays": "epochal.sources",
    "from_dataset": "epochal.sources",
    "make_order": "epochal.order",
    "mix": "epochal.mixture",
    "sample_rng": "epochal.rng",
    "split": "epochal.sources",
    "subset": "epochal.sources",
}

__all__ = [
    "Error",
    "IdentityOrder",
    "Loader",
    "Mixture",
    "Plan",
    "Sampler",
    "ShuffledOrder",
    "Source",
    "StateError",
    "WeightedSampler",
    "__version__",
    "balanced",
    "concat",
    "from_arrays",
    "from_dataset",
    "make_order",
    "mix",
    "sample_rng",
    "split",
    "subset",
]

if TYPE_CHECKING:
    from epochal.loader import Loader
    from epochal.mixture import Mixture, mix
    from epochal.order import IdentityOrder, ShuffledOrder, make_order
    from epochal.plan import Plan
    from epochal.rng import sample_rng
    from epochal.sampling import Sampler, WeightedSampler, balanced
    from epochal.sources import Source, concat, from_arrays, from_dataset, split, subset


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'epochal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
