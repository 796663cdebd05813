"""The rules of ``epochal lint``, one module each, in id order.

Each module documents its rule (what it finds, why it is a bug, how to fix it) and
exposes ``RULE``. Ids are stable: a rule that is retired keeps its id unused.
"""

from __future__ import annotations

from epochal.lint._model import Rule
from epochal.lint.rules import (
    epl001_numpy_rng,
    epl002_set_epoch,
    epl003_discarded_to,
    epl004_loss_append,
    epl005_zero_grad,
    epl006_module_prefix,
    epl007_torch_save,
    epl008_parser_in_spawn,
)

__all__ = ["RULES"]

RULES: tuple[Rule, ...] = (
    epl001_numpy_rng.RULE,
    epl002_set_epoch.RULE,
    epl003_discarded_to.RULE,
    epl004_loss_append.RULE,
    epl005_zero_grad.RULE,
    epl006_module_prefix.RULE,
    epl007_torch_save.RULE,
    epl008_parser_in_spawn.RULE,
)
