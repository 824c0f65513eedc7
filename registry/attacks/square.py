"""Square Attack, a query-only random search (Andriushchenko et al., Square Attack, ECCV 2020).

Linf runs the harness's version (harness/square.py, draw-for-draw equal to the reference); L2 runs the reference code.
"""

import torch
from pyautoattack.square import SquareAttack
from torch import Tensor, nn

from harness import Attack, register_attack
from harness.attacks import REFERENCE_NORMS, check_threat_model
from harness.square import square_linf


@register_attack("square", paper="Andriushchenko et al., ECCV 2020")
class Square(Attack):
    """Black-box random search over square-shaped updates on the margin loss; Linf or L2 (`norm`)."""

    white_box = False

    def __init__(self, norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8, restarts: int = 1, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.threat_model = check_threat_model(norm, "square")
        self.n_queries, self.p_init, self.restarts = n_queries, p_init, restarts

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """AutoAttack's settings (margin loss, no schedule rescaling)."""
        if self.threat_model == "linf":
            return square_linf(model, x, y, eps, self.n_queries, self.p_init, self.restarts, self.seed)
        attack = SquareAttack(
            model, norm=REFERENCE_NORMS[self.threat_model], n_queries=self.n_queries, eps=eps, p_init=self.p_init,
            n_restarts=self.restarts, seed=self.seed, verbose=False, resc_schedule=False, device=x.device,
        )
        # The reference reseeds the global generator; keep the caller's random state as it was.
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
            return attack.perturb(x, y).detach()
