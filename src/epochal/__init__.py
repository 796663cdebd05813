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
    "CorruptStoreError": "epochal.store",
    "IdentityOrder": "epochal.order",
    "Loader": "epochal.loader",
    "Mixture": "epochal.mixture",
    "Plan": "epochal.plan",
    "Sampler": "epochal.sampling",
    "ShuffledOrder": "epochal.order",
    "Source": "epochal.sources",
    "StoreError": "epochal.store",
    "StoreSource": "epochal.store",
    "WeightedSampler": "epochal.sampling",
    "balanced": "epochal.sampling",
    "concat": "epochal.sources",
    "from_arrays": "epochal.sources",
    "from_dataset": "epochal.sources",
    "make_order": "epochal.order",
    "merge": "epochal.store",
    "mix": "epochal.mixture",
    "open": "epochal.store",
    "sample_rng": "epochal.rng",
    "split": "epochal.sources",
    "subset": "epochal.sources",
    "verify": "epochal.store",
    "write": "epochal.store",
}

__all__ = [
    "CorruptStoreError",
    "Error",
    "IdentityOrder",
    "Loader",
    "Mixture",
    "Plan",
    "Sampler",
    "ShuffledOrder",
    "Source",
    "StateError",
    "StoreError",
    "StoreSource",
    "WeightedSampler",
    "__version__",
    "balanced",
    "concat",
    "from_arrays",
    "from_dataset",
    "make_order",
    "merge",
    "mix",
    "open",
    "sample_rng",
    "split",
    "subset",
    "verify",
    "write",
]

if TYPE_CHECKING:
    from epochal.loader import Loader
    from epochal.mixture import Mixture, mix
    from epochal.order import IdentityOrder, ShuffledOrder, make_order
    from epochal.plan import Plan
    from epochal.rng import sample_rng
    from epochal.sampling import Sampler, WeightedSampler, balanced
    from epochal.sources import Source, concat, from_arrays, from_dataset, split, subset
    from epochal.store import CorruptStoreError, StoreError, StoreSource, merge, open, verify, write


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'epochal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
