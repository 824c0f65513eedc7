"""Projected Gradient Descent under Linf (Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import Attack, register_attack
from harness.attacks import project


@register_attack("pgd_linf", paper="Madry et al., ICLR 2018")
class PGDLinf(Attack):
    """Signed-gradient ascent on cross-entropy from a random start in the Linf ball, projected each step."""

    threat_model = "linf"

    def __init__(
        self,
        steps: int = 10,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.steps, self.step_size, self.restarts, self.random_start = steps, step_size, restarts, random_start

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """Last iterate of each restart; an example keeps the first restart that fools the model."""
        alpha = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        best = x.detach().clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            x_adv = x.detach().clone()
            if self.random_start:
                noise = torch.rand(x.shape, generator=gen, device=x.device) * 2 * eps - eps
                x_adv = (x_adv + noise).clamp_(0.0, 1.0)
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                loss = F.cross_entropy(model(x_adv), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps, "linf")
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
            take = wrong & ~fooled
            best[take] = x_adv[take]
            # Examples no restart fooled keep the last restart's iterate (what a single run returns).
            best[~fooled & ~wrong] = x_adv[~fooled & ~wrong]
            fooled |= wrong
        return best
