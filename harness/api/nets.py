"""Model plumbing: input normalisation inside the model, and the frozen (attack-time) view of a model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class Normalized(nn.Module):
    """Wraps a network so that it takes [0, 1] pixels: attacks then work in pixel space."""

    mean: Tensor
    std: Tensor

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


def net_input(model: nn.Module, x: Tensor) -> Tensor:
    """The input the inner network sees for pixel input `x`."""
    return (x - model.mean) / model.std if isinstance(model, Normalized) else x


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with parameter gradients off (attacks need input gradients only), restored after.

    Eval mode also while training adversarially (as the TRADES and MART reference code): the training adversary
    attacks the same function that evaluation attacks, each example does not depend on the rest of its batch,
    and the attack's extra forward passes do not shift BN running statistics.
    """
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
