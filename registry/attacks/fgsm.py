"""Fast Gradient Sign Method (Goodfellow et al., Explaining and Harnessing Adversarial Examples, ICLR 2015)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import Attack, register_attack


@register_attack("fgsm", paper="Goodfellow et al., ICLR 2015")
class FGSM(Attack):
    """One signed-gradient step of size eps on the cross-entropy loss (Linf)."""

    threat_model = "linf"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """x + eps * sign(grad_x CE(model(x), y)), clipped to [0, 1]."""
        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        return (x.detach() + eps * grad.sign()).clamp_(0.0, 1.0)
