"""Square Attack under Linf (Andriushchenko et al., ECCV 2020), kept draw-for-draw equal to the AutoAttack reference.

pyautoattack's `SquareAttack` (Linf) draws one square position and one sign per channel per iteration, shared by
the whole batch, so the random stream does not depend on which examples are still being attacked. This version
draws a run's whole stream up front on the CPU generator and copies it to the device once, builds every square
there, and keeps fooled examples in the batch, frozen by masks, between compactions (the CPU's policy: every
query; an accelerator's: never, the host reading "all fooled?" after queries 1, 2, 4, 8, 16 and then every 16,
where the reference syncs several times per query). The draws, the updates and so the images are the
reference's, bit for bit (`tests/test_square.py`). After a run, the generator is left exactly where the
reference's would be (the queries it really ran), so later restarts draw the reference's numbers too.
"""

from __future__ import annotations

import math

import torch
from pyautoattack.square import SquareAttack
from torch import Tensor, nn

from harness.api.attack import REFERENCE_NORMS, Attack, check_threat_model
from harness.attacks.common import margin, policy_for, rows_to_keep, seeded_restarts


def p_selection(p_init: float, it: int) -> float:
    """The reference's schedule for the fraction of pixels a square covers (without rescaling to n_queries)."""
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _sign(gen: torch.Generator, shape: list[int], like: Tensor) -> Tensor:
    return torch.sign(2 * torch.rand(shape, generator=gen).to(like.device) - 1)


def _squares(gen: torch.Generator, n_queries: int, p_init: float, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Every query's square (a (queries, h, w) mask) and its per-channel value 2 * eps * sign, in the reference's
    draw order (corner row, corner column, c signs per query), drawn at once and copied to the device once."""
    _, c, h, w = x.shape
    sizes = [min(max(int(round(math.sqrt(p_selection(p_init, i) * c * h * w / c))), 1), min(h, w)) for i in range(n_queries)]
    u = torch.rand(n_queries, 2 + c, generator=gen).to(x.device)
    s = torch.tensor(sizes, device=x.device)
    # The reference's random_int: (high - low) * rand in float32, truncated.
    vh = ((h - s).to(u.dtype) * u[:, 0]).long()
    vw = ((w - s).to(u.dtype) * u[:, 1]).long()
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_h = (rows >= vh[:, None]) & (rows < (vh + s)[:, None])
    in_w = (cols >= vw[:, None]) & (cols < (vw + s)[:, None])
    return in_h[:, :, None] & in_w[:, None, :], 2.0 * eps * torch.sign(2 * u[:, 2:] - 1)


def square_linf_single_run(model: nn.Module, x: Tensor, y: Tensor, eps: float, n_queries: int, p_init: float, gen: torch.Generator) -> Tensor:
    """One run of Square (margin loss) on (x, y): the best images found (misclassified where it succeeded)."""
    n, c, h, w = x.shape
    x_best = torch.clamp(x + eps * _sign(gen, [n, c, 1, w], x), 0.0, 1.0)
    margin_min = margin(model(x_best), y)
    if bool((margin_min < 0.0).all()):
        return x_best
    state = gen.get_state()
    masks, values = _squares(gen, n_queries, p_init, x, eps)
    policy = policy_for(x.device)
    out = x_best.clone()
    idx = torch.arange(n, device=x.device)
    loss_min = margin_min.clone()
    lo, hi = x - eps, x + eps
    ran = torch.zeros((), dtype=torch.long, device=x.device)  # queries the reference would have run
    for i_iter in range(n_queries):
        if policy.drop_now(i_iter):
            keep = rows_to_keep(margin_min > 0.0)
            if len(keep) == 0:
                break
            if len(keep) < len(idx):
                out[idx] = x_best
                idx, x_best, y, margin_min, loss_min, lo, hi = (t[keep] for t in (idx, x_best, y, margin_min, loss_min, lo, hi))
        elif policy.check_now(i_iter) and not bool((margin_min > 0.0).any()):
            break
        active = margin_min > 0.0
        ran += active.any()
        new_deltas = torch.where(masks[i_iter], values[i_iter].view(c, 1, 1), 0.0)
        x_new = torch.clamp(torch.min(torch.max(x_best + new_deltas, lo), hi), 0.0, 1.0)
        m = margin(model(x_new), y)
        # Margin loss: the loss and the margin are one number, so "improved" and "misclassified" update both.
        improved = active & ((m < loss_min) | (m <= 0.0))
        loss_min = torch.where(active & (m < loss_min), m, loss_min)
        margin_min = torch.where(improved, m, margin_min)
        x_best = torch.where(improved.view(-1, 1, 1, 1), x_new, x_best)
    out[idx] = x_best
    # Leave the generator where the reference's is: after the draws of the queries it ran (it stops once all are fooled).
    gen.set_state(state)
    torch.rand(int(ran) * (2 + c), generator=gen)
    return out


def square_linf(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, n_queries: int = 5000, p_init: float = 0.8, n_restarts: int = 1, seed: int = 0
) -> Tensor:
    """Square Attack with restarts on the still-robust examples; clean `x` where every restart failed."""

    def run(_: int, todo: Tensor, gen: torch.Generator, __: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            adv_s = square_linf_single_run(model, x[todo], y[todo], eps, n_queries, p_init, gen)
            return model(adv_s).argmax(1) != y[todo], adv_s

    return seeded_restarts(model, x, y, seed, n_restarts, run)


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
