"""Fast Gradient Sign Method (Goodfellow et al., Explaining and Harnessing Adversarial Examples, ICLR 2015)."""

from torch import Tensor, nn

from harness.api.attack import Attack
from harness.attacks.common import input_grad


class FGSM(Attack):
    """One signed-gradient step of size eps on the cross-entropy loss (Linf)."""

    threat_model = "linf"

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """x + eps * sign(grad_x CE(model(x), y)), clipped to [0, 1]."""
        grad, _ = input_grad(model, x, y)
        return (x.detach() + eps * grad.sign()).clamp_(0.0, 1.0)
