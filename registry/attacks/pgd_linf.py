"""Projected Gradient Descent under Linf (Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018)."""

from torch import Tensor, nn

from harness import Attack, register_attack
from harness.errors import AttackError
from harness.pgd import pgd


@register_attack("pgd_linf", paper="Madry et al., ICLR 2018")
class PGDLinf(Attack):
    """Signed-gradient ascent on cross-entropy from a random start in the Linf ball, projected each step; random restarts."""

    threat_model = "linf"

    def __init__(
        self, steps: int = 10, step_size: float | None = None, restarts: int = 1, random_start: bool = True, early_stop: bool = True, seed: int = 0
    ) -> None:
        super().__init__(seed=seed)
        if steps < 1 or restarts < 1:
            raise AttackError(f"pgd_linf: steps={steps} and restarts={restarts} must both be >= 1.")
        self.steps, self.step_size, self.restarts, self.random_start = steps, step_size, restarts, random_start
        # An example counts as fooled at the first iterate that fools it; False keeps plain last-iterate PGD.
        self.early_stop = early_stop

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """Step size defaults to 2.5 * eps / steps (Madry et al.)."""
        return pgd(model, x, y, eps, "linf", self.steps, self.step_size, self.restarts, self.random_start, self.seed, self.early_stop)
