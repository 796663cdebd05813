"""EPL003 (P11): ``tensor.to(device)`` / ``tensor.cuda()`` whose result is thrown away.

What: a call to ``.to(...)`` or ``.cuda(...)`` that is a statement on its own, on a value
the rule can tell is a tensor: a name unpacked from a batch (``for x, y in loader``,
``inputs, labels = data``), made by a torch tensor function (``torch.randn``,
``torch.tensor``, ``torch.from_numpy``...) or tensor arithmetic, taken from a subscript
(``batch["image"]``), a parameter annotated ``Tensor``, or, when nothing else is known,
a name that is by convention a tensor (``x``, ``images``, ``labels``...).

Why: ``Tensor.to`` and ``Tensor.cuda`` return a new tensor and leave the original where
it was; only ``nn.Module.to`` works in place. The statement does nothing, and the step
then runs on the CPU copy, or fails later with a device-mismatch error far from the line
at fault. ``model.to(device)``, ``net.cuda()`` and anything whose value comes from a
class (``Net()``) or ``.modules()`` are modules and are not reported; nor are containers
that move themselves (a Hugging Face ``BatchEncoding``, a PyG ``Data`` batch), because
they are not known to be tensors.

Fix: assign the result, ``x = x.to(device)``; epochal's Loader can also deliver batches
already on the device.
"""

from __future__ import annotations

import ast
import re

from epochal.lint._context import FunctionNode, ModuleContext, last_name
from epochal.lint._model import Hit, Rule
from epochal.lint.rules._util import hit

__all__ = ["RULE"]

_MODULE_NAME = re.compile(
    r"model|net|module|layer|encoder|decoder|backbone|head|criterion|loss_?fn|classifier|"
    r"ema|teacher|student|discriminator|generator|critic|policy|unet|vae|transformer|"
    r"bert|gpt|block|embed|wrapper|engine|learner|agent",
    re.IGNORECASE,
)
_TENSOR_NAMES = frozenset(
    {
        "x", "y", "z", "xb", "yb", "img", "imgs", "image", "images", "input", "inputs",
        "target", "targets", "label", "labels", "mask", "masks", "tokens", "input_ids",
        "attention_mask", "logits", "feats", "features", "tensor", "src", "tgt", "noise",
        "latents", "pixel_values", "audio", "waveform", "gt", "pred", "preds", "weights",
    }
)  # fmt: skip
_TENSOR_METHODS = frozenset(
    {
        "view", "reshape", "permute", "unsqueeze", "squeeze", "clone", "detach",
        "contiguous", "flatten", "transpose", "expand", "repeat", "softmax", "sum", "mean",
        "argmax", "masked_fill", "index_select", "gather", "long", "int", "bool",
    }
)  # fmt: skip
_MODULE_ITERATORS = frozenset({"modules", "children", "named_modules", "named_children"})
_TENSOR_ITERATORS = frozenset({"parameters", "buffers"})
_NOT_TORCH_TENSOR_FUNCS = frozenset({"load", "compile", "device", "Generator", "no_grad"})


def _collect(ctx: ModuleContext) -> list[Hit]:
    if ".to(" not in ctx.source and ".cuda(" not in ctx.source:
        return []
    hits = []
    for site in ctx.calls:
        if not site.discarded or site.attr not in ("to", "cuda"):
            continue
        func = site.node.func
        assert isinstance(func, ast.Attribute)
        if _kind(ctx, func.value, site.function, site.node.lineno, depth=0) == "tensor":
            text = ast.unparse(func.value)
            hits.append(
                hit(
                    site.node,
                    f"{text}.{site.attr}(...) returns a moved copy that is thrown away; "
                    f"write {text} = {ast.unparse(site.node)}",
                )
            )
    return hits


def _kind(
    ctx: ModuleContext, node: ast.expr, function: FunctionNode | None, line: int, depth: int
) -> str | None:
    """``"tensor"``, ``"module"`` or None (unknown) for the value of ``node``."""
    if depth > 4:
        return None
    if isinstance(node, ast.Attribute):
        if _MODULE_NAME.search(node.attr):
            return "module"
        return "tensor" if node.attr in _TENSOR_NAMES else None
    if isinstance(node, ast.Subscript):
        base = last_name(node.value)
        if base is not None and _MODULE_NAME.search(base):
            return "module"
        return "tensor"
    if isinstance(node, ast.Call):
        return _call_kind(ctx, node, function, line, depth)
    if isinstance(node, ast.BinOp):
        return "tensor"
    if not isinstance(node, ast.Name):
        return None
    if _MODULE_NAME.search(node.id):
        return "module"
    binding = ctx.binding_before(node.id, function, line)
    if binding is None:
        return "tensor" if node.id in _TENSOR_NAMES else None
    value = binding.value
    if binding.kind == "arg":
        annotation = last_name(value) if value is not None else None
        if annotation is not None:
            return "tensor" if annotation.endswith("Tensor") else "module"
        return "tensor" if node.id in _TENSOR_NAMES else None
    if binding.kind == "assign" and value is not None:
        return _kind(ctx, value, function, binding.line, depth + 1)
    if binding.kind == "unpack" and value is not None:
        if isinstance(value, ast.Call) and last_name(value.func) != "next":
            return None  # ``a, b = build()``: could be anything
        return "tensor"
    if binding.kind in ("for", "for_unpack") and value is not None:
        return _loop_target_kind(node.id, value, unpacked=binding.kind == "for_unpack")
    return None


def _call_kind(
    ctx: ModuleContext, call: ast.Call, function: FunctionNode | None, line: int, depth: int
) -> str | None:
    name = last_name(call.func) or ""
    qualname = ctx.qualname(call.func) or ""
    if name.endswith("Tensor"):
        return "tensor"  # torch.Tensor(...), torch.FloatTensor(...)
    torch_function = qualname.startswith("torch.") and not qualname.startswith("torch.nn")
    if torch_function and name not in _NOT_TORCH_TENSOR_FUNCS and name[:1].islower():
        return "tensor"
    if name[:1].isupper() or name in ("create_model", "from_pretrained"):
        return "module"
    if isinstance(call.func, ast.Attribute):
        if name in _TENSOR_METHODS:
            return "tensor"
        if name in ("to", "cuda", "float", "half", "double", "cpu"):
            return _kind(ctx, call.func.value, function, line, depth + 1)
    return None


def _loop_target_kind(name: str, iterable: ast.expr, *, unpacked: bool) -> str | None:
    if isinstance(iterable, ast.Call):
        method = last_name(iterable.func)
        if method in _MODULE_ITERATORS:
            return "module"
        if method in _TENSOR_ITERATORS or method == "named_parameters":
            return "tensor"
    if isinstance(iterable, ast.List | ast.Tuple | ast.Set):
        return None  # ``for m in (model_a, model_b)``
    # batches from a loader: unpacked names are tensors; a whole batch may be a container
    # that moves itself (BatchEncoding, PyG Data), so only tensor-like names count
    return "tensor" if unpacked or name in _TENSOR_NAMES else None


RULE = Rule(
    id="EPL003",
    problem="P11",
    title="tensor.to(device) result discarded",
    explanation=(
        "Tensor.to() and Tensor.cuda() return a new tensor and leave the original where it "
        "was (only nn.Module.to works in place), so this statement does nothing: the code "
        "after it keeps using the tensor on its old device, which runs on the wrong device "
        "or fails later with a device-mismatch error far from this line. Fix: assign the "
        "result (x = x.to(device)), or let epochal's Loader deliver batches on the device."
    ),
    collect=_collect,
)
