"""Auto-PGD on its own (Croce & Hein, Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks, ICML 2020)."""

import torch
from torch import Tensor, nn

from harness import Attack, register_attack
from harness.apgd import LOSSES, apgd, apgd_targeted
from harness.attacks import REFERENCE_NORMS, check_threat_model
from harness.errors import AttackError


@register_attack("apgd", paper="Croce & Hein, ICML 2020")
class APGD(Attack):
    """Step-size-free PGD with momentum; loss 'ce', 'dlr' or 'dlr-targeted' (APGD-T over `n_target_classes`); Linf or L2."""

    def __init__(
        self, loss: str = "ce", norm: str = "linf", n_iter: int = 100, restarts: int = 1, n_target_classes: int = 9, rho: float = 0.75, seed: int = 0
    ) -> None:
        super().__init__(seed=seed)
        if loss not in LOSSES:
            raise AttackError(f"apgd: unknown loss {loss!r}; accepted: {', '.join(LOSSES)}.")
        if n_iter < 1 or restarts < 1 or n_target_classes < 1:
            raise AttackError(f"apgd: n_iter={n_iter}, restarts={restarts} and n_target_classes={n_target_classes} must be >= 1.")
        self.threat_model = check_threat_model(norm, "apgd")
        self.loss, self.n_iter, self.restarts, self.n_target_classes, self.rho = loss, n_iter, restarts, n_target_classes, rho

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """The reference's defaults: 100 iterations, rho 0.75, starting step 2 * eps."""
        norm = REFERENCE_NORMS[self.threat_model]
        if self.loss == "dlr-targeted":
            with torch.no_grad():
                n_classes = model(x[:1]).shape[1]
            if n_classes < 4:
                raise AttackError("apgd: the targeted DLR loss needs four or more classes; use loss = 'ce' or 'dlr'.")
            # At most every other class as a target (the reference would wrap around and retarget the true class).
            targets = min(self.n_target_classes, n_classes - 1)
            return apgd_targeted(model, x, y, eps, norm, self.n_iter, self.restarts, targets, self.seed, self.rho)
        return apgd(model, x, y, eps, norm, self.loss, self.n_iter, self.restarts, self.seed, self.rho)
