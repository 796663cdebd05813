"""Built-in models for ``epochal train`` and ``epochal demo`` (``--model.name``)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from epochal._errors import Error

__all__ = ["MLP", "SmallCNN", "make_model"]


class SmallCNN(nn.Module):
    """Three conv-GroupNorm-ReLU blocks, global average pooling, dropout, a linear classifier.

    GroupNorm rather than BatchNorm: it has no running statistics, so a short run on the CPU
    evaluates as well as it trains.

    Takes ``uint8`` images (scaled to [0, 1] here) or float images, shape (N, C, H, W).
    """

    def __init__(
        self, *, num_classes: int, dropout: float = 0.1, in_channels: int = 3, width: int = 8
    ) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.GroupNorm(4, cout),
                nn.ReLU(),
            ]

        self.features = nn.Sequential(
            *block(in_channels, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.head(self.features(x))


class MLP(nn.Module):
    """Flatten, one hidden ReLU layer with dropout, a linear classifier."""

    def __init__(
        self, *, num_classes: int, in_features: int, dropout: float = 0.1, hidden: int = 128
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            x = x.float()
        return self.net(x)


def make_model(
    name: str, *, num_classes: int, dropout: float, input_shape: Sequence[int]
) -> nn.Module:
    """Build ``name``: ``"small_cnn"``, ``"mlp"`` or ``"package.module:factory"``.

    A factory is called as ``factory(num_classes=..., dropout=..., input_shape=...)``, where
    ``input_shape`` is one record's input shape (no batch axis).
    """
    if name == "small_cnn":
        if len(input_shape) != 3:
            raise Error(
                f"small_cnn needs (C, H, W) image inputs, got records of shape {tuple(input_shape)}"
            )
        return SmallCNN(num_classes=num_classes, dropout=dropout, in_channels=int(input_shape[0]))
    if name == "mlp":
        return MLP(num_classes=num_classes, dropout=dropout, in_features=math.prod(input_shape))
    module_name, _, attr = name.partition(":")
    if not attr:
        raise Error(
            f"model name must be 'small_cnn', 'mlp' or 'package.module:factory', got {name!r}"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise Error(f"cannot import model factory {name!r}: {err}") from err
    return factory(num_classes=num_classes, dropout=dropout, input_shape=tuple(input_shape))
