"""Model plumbing shared by architectures: input normalisation inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalized(nn.Module):
    """Wraps a network so that it takes [0, 1] pixels: attacks then work in pixel space."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise, then classify."""
        return self.net((x - self.mean) / self.std)


def inner(model: nn.Module) -> nn.Module:
    """The network inside a `Normalized` wrapper (the part pruners operate on)."""
    return model.net if isinstance(model, Normalized) else model
