"""No-op plugins for measuring the scheduler's own overhead per job (tiny data, a one-layer net, an identity attack)."""

from pathlib import Path

import torch
from torch import Tensor, nn

from harness import (
    Attack,
    ImageData,
    register_architecture,
    register_attack,
    register_dataset,
)


@register_dataset("noop_data")
def noop_data(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """Eight random 4x4 grey images per split."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 4, 4, generator=g)
    y = torch.arange(16) % 2
    return ImageData("noop_data", x[:8], y[:8], x[8:], y[8:], ["a", "b"], (0.5,), (0.25,))


@register_architecture("noop_net")
def noop_net(num_classes: int = 2, in_channels: int = 1) -> nn.Module:
    """One 1x1 conv and a linear layer."""
    return nn.Sequential(nn.Conv2d(in_channels, 2, 1), nn.Flatten(), nn.Linear(32, num_classes))


@register_attack("noop_attack")
class NoopAttack(Attack):
    """Returns the clean images unchanged."""

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """Identity."""
        return x.clone()
