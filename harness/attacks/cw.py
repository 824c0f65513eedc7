"""Carlini & Wagner L2 attack (Carlini & Wagner, Towards Evaluating the Robustness of Neural Networks, IEEE S&P 2017)."""

import torch
from torch import Tensor, nn

from harness.api.attack import MinimalAttack
from harness.api.errors import AttackError
from harness.attacks.common import margin


class CWL2(MinimalAttack):
    """Minimal L2 perturbation: Adam on ||d||^2 + c * margin in tanh space, binary search on c per example."""

    threat_model = "l2"

    def __init__(
        self, steps: int = 100, binary_steps: int = 5, lr: float = 0.01, initial_const: float = 1.0, confidence: float = 0.0, seed: int = 0
    ) -> None:
        super().__init__(seed=seed)
        if steps < 1 or binary_steps < 1 or lr <= 0 or initial_const <= 0:
            raise AttackError(f"cw_l2: steps={steps}, binary_steps={binary_steps}, lr={lr}, initial_const={initial_const} must be positive.")
        self.steps, self.binary_steps, self.lr = steps, binary_steps, lr
        self.initial_const, self.confidence = initial_const, confidence

    def minimal(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The smallest adversarial example found over every binary-search step (`x` where none was found)."""
        x = x.detach()
        n = len(x)
        if n == 0:
            return x.clone()
        shape = (-1, *([1] * (x.dim() - 1)))
        # tanh parameterisation keeps every iterate inside [0, 1]; atanh is clipped away from +-1.
        w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        const = torch.full((n,), self.initial_const, device=x.device)
        lo, hi = torch.zeros_like(const), torch.full_like(const, float("inf"))
        best_l2 = torch.full_like(const, float("inf"))
        best_adv = x.clone()
        for _ in range(self.binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                adv = (torch.tanh(w) + 1) / 2
                logits = model(adv)
                gap = margin(logits, y) + self.confidence
                loss_margin = gap.clamp_min(0)
                l2 = (adv - x).flatten(1).pow(2).sum(1)
                loss = (l2 + const * loss_margin).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    # Track the best on the iterate just evaluated (no host sync: masks only).
                    success = (logits.argmax(1) != y) & (gap <= 0)
                    better = success & (l2.sqrt() < best_l2)
                    best_l2 = torch.where(better, l2.sqrt(), best_l2)
                    best_adv = torch.where(better.view(shape), adv.detach(), best_adv)
                    found |= success
            # Binary search: shrink c where an adversarial example was found, grow it where none was.
            hi = torch.where(found, torch.minimum(hi, const), hi)
            lo = torch.where(found, lo, torch.maximum(lo, const))
            const = torch.where(hi < float("inf"), (lo + hi) / 2, const * 10)
        return best_adv
