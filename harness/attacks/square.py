"""Square Attack under Linf (Andriushchenko et al., ECCV 2020), kept draw-for-draw equal to the AutoAttack reference.

pyautoattack's `SquareAttack` (Linf) draws one square position and one sign per channel per iteration, shared by
the whole batch, so the random stream does not depend on which examples are still being attacked. That lets this
version keep fooled examples in the batch, frozen by masks, between compactions (`harness.attacks.compact_now`:
every query on the CPU, every 16 on an accelerator, where the reference syncs several times per query): the random
draws, the updates and so the images are the reference's, bit for bit (`tests/test_square.py`).
On an accelerator, with `n_restarts` > 1, a restart after a run that fooled everything early may draw different
(equally random) numbers than the reference's, since it notices "everything fooled" only at a compaction point.
"""

from __future__ import annotations

import math

import torch
from pyautoattack.square import SquareAttack
from torch import Tensor, nn

from harness.api.attack import REFERENCE_NORMS, Attack, check_threat_model
from harness.attacks.common import attack_until_fooled, compact_now


def p_selection(p_init: float, it: int) -> float:
    """The reference's schedule for the fraction of pixels a square covers (without rescaling to n_queries)."""
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _margin(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Logit of the true class minus the largest other logit (negative = misclassified)."""
    logits = model(x)
    u = torch.arange(len(y), device=x.device)
    y_corr = logits[u, y].clone()
    logits[u, y] = -float("inf")
    return y_corr - logits.max(dim=-1)[0]


def _rand(gen: torch.Generator, shape: list[int], device: torch.device) -> Tensor:
    return torch.rand(shape, generator=gen).to(device)


def _sign(gen: torch.Generator, shape: list[int], device: torch.device) -> Tensor:
    return torch.sign(2 * _rand(gen, shape, device) - 1)


def square_linf_single_run(model: nn.Module, x: Tensor, y: Tensor, eps: float, n_queries: int, p_init: float, gen: torch.Generator) -> Tensor:
    """One run of Square (margin loss) on (x, y): the best images found (misclassified where it succeeded)."""
    n, c, h, w = x.shape
    n_features = c * h * w
    x_best = torch.clamp(x + eps * _sign(gen, [n, c, 1, w], x.device), 0.0, 1.0)
    margin_min = _margin(model, x_best, y)
    if bool((margin_min < 0.0).all()):
        return x_best
    out = x_best.clone()
    idx = torch.arange(n, device=x.device)
    loss_min = margin_min.clone()
    lo, hi = x - eps, x + eps
    for i_iter in range(n_queries):
        if compact_now(i_iter, x.device):
            keep = (margin_min > 0.0).nonzero().squeeze(1)
            if len(keep) == 0:
                break
            if len(keep) < len(idx):
                out[idx] = x_best
                idx, x_best, y, margin_min, loss_min, lo, hi = (t[keep] for t in (idx, x_best, y, margin_min, loss_min, lo, hi))
        active = margin_min > 0.0
        p = p_selection(p_init, i_iter)
        s = min(max(int(round(math.sqrt(p * n_features / c))), 1), min(h, w))
        # Square corner drawn and rounded on the CPU, where the generator lives: no device round trip.
        vh = int((torch.rand([1], generator=gen) * (h - s)).long())
        vw = int((torch.rand([1], generator=gen) * (w - s)).long())
        new_deltas = torch.zeros([c, h, w], device=x.device)
        new_deltas[:, vh : vh + s, vw : vw + s] = 2.0 * eps * _sign(gen, [c, 1, 1], x.device)
        x_new = torch.clamp(torch.min(torch.max(x_best + new_deltas, lo), hi), 0.0, 1.0)
        margin = _margin(model, x_new, y)
        # Margin loss: the loss and the margin are one number, so "improved" and "misclassified" update both.
        improved = active & ((margin < loss_min) | (margin <= 0.0))
        loss_min = torch.where(active & (margin < loss_min), margin, loss_min)
        margin_min = torch.where(improved, margin, margin_min)
        x_best = torch.where(improved.view(-1, 1, 1, 1), x_new, x_best)
    out[idx] = x_best
    return out


def square_linf(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, n_queries: int = 5000, p_init: float = 0.8, n_restarts: int = 1, seed: int = 0
) -> Tensor:
    """Square Attack with restarts on the still-robust examples; clean `x` where every restart failed."""
    x, y = x.detach(), y.detach()
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        correct = model(x).argmax(1) == y

        def run(_: int, todo: Tensor) -> tuple[Tensor, Tensor]:
            adv_s = square_linf_single_run(model, x[todo], y[todo], eps, n_queries, p_init, gen)
            return model(adv_s).argmax(1) != y[todo], adv_s

        return attack_until_fooled(x, correct, n_restarts, run)


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
