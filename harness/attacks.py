"""Attack plugin contract and the evaluation helpers every attack shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

THREAT_MODELS = ("linf", "l2")


class Attack(ABC):
    """Finds adversarial images inside an eps-ball around clean [0, 1] images."""

    threat_model: ClassVar[str] = "linf"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """Adversarial versions of `x` (same shape, in [0, 1], within `eps` in the threat model's norm)."""


def project(x_adv: Tensor, x: Tensor, eps: float, threat_model: str) -> Tensor:
    """Project `x_adv` onto the eps-ball around `x` intersected with the [0, 1] box."""
    delta = x_adv - x
    if threat_model == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        delta = delta * (eps / norms).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted labels, without building a graph."""
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
