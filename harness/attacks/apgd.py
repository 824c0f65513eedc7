"""Auto-PGD (Croce & Hein, ICML 2020), written for speed and kept step-for-step equal to the AutoAttack reference.

The algorithm, step-size schedule, checkpoints, momentum, losses, restarts, target order and random draws are
those of pyautoattack's `APGDAttack` / `APGDAttack_targeted` (same seed -> same starting points). Two things differ,
neither changing which examples end up fooled:

- Early stop: every per-example quantity of APGD (step size, best loss, oscillation checks) depends on that
  example alone, so an example stops costing compute once it is misclassified. With `early_stop=False` the whole
  batch iterates to the end and the returned images are bit-for-bit the reference's (`tests/test_apgd.py`).
- Few host syncs: bookkeeping uses masks (`torch.where`) and the step-size checkpoints are one vectorised
  comparison. Under the CPU's policy the batch is compacted every step; under an accelerator's
  (`harness.attacks.common.policy_for`) it is never re-indexed, fooled rows keep iterating as the reference's do
  (same batch, same kernels, same images), and the host reads "all fooled?" only after steps 1, 2, 4, 8, 16 and
  then every 16 steps, where the reference syncs several times per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.attack import (
    REFERENCE_NORMS,
    Attack,
    check_threat_model,
    norms,
    view_per_example,
)
from harness.api.errors import AttackError
from harness.attacks.common import (
    policy_for,
    reference_draw,
    rows_to_keep,
    seeded_restarts,
)

LOSSES = ("ce", "dlr", "dlr-targeted")


def _normalize(v: Tensor, norm: str) -> Tensor:
    """v divided by its per-example norm (+1e-12), as the reference's `normalize`."""
    return v / (view_per_example(norms(v, norm, squares=True), v) + 1e-12)


def _l2(v: Tensor) -> Tensor:
    return view_per_example(norms(v, "l2", squares=True), v)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (untargeted), per example."""
    srt, ind = logits.sort(dim=1)
    top_is_y = (ind[:, -1] == y).float()
    u = torch.arange(len(y), device=logits.device)
    return -(logits[u, y] - srt[:, -2] * top_is_y - srt[:, -1] * (1.0 - top_is_y)) / (srt[:, -1] - srt[:, -3] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, y_target: Tensor) -> Tensor:
    """Targeted difference of logits ratio, per example (needs four or more classes)."""
    srt, _ = logits.sort(dim=1)
    u = torch.arange(len(y), device=logits.device)
    return -(logits[u, y] - logits[u, y_target]) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


def _loss_grad(model: nn.Module, x_adv: Tensor, y: Tensor, y_target: Tensor | None, loss: str, eot_iter: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example loss, logits and input gradient (averaged over `eot_iter` passes, for randomised models)."""
    x_adv = x_adv.detach().requires_grad_(True)
    grad = torch.zeros_like(x_adv)
    for _ in range(eot_iter):
        with torch.enable_grad():
            logits = model(x_adv)
            if loss == "ce":
                per = F.cross_entropy(logits, y, reduction="none")
            elif loss == "dlr":
                per = dlr_loss(logits, y)
            else:
                per = dlr_targeted_loss(logits, y, y_target)  # type: ignore[arg-type]
            (g,) = torch.autograd.grad(per.sum(), [x_adv])
        grad += g.detach()
    grad /= float(eot_iter)
    return per.detach(), logits.detach(), grad


def apgd_single_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str,
    loss: str,
    n_iter: int,
    start: Tensor,
    y_target: Tensor | None = None,
    rho: float = 0.75,
    eot_iter: int = 1,
    early_stop: bool = True,
) -> tuple[Tensor, Tensor]:
    """One APGD run from `start`: (fooled mask, adversarial images where fooled, `start` elsewhere)."""
    n_iter_2, n_iter_min, size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    out_adv = start.clamp(0.0, 1.0)
    out_fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    idx = torch.arange(len(x), device=x.device)  # positions in the output of the examples still in the batch
    policy = policy_for(x.device)
    # Compacting keeps an example's first fooling iterate (it leaves the batch); masks keep the reference's last one.
    first = early_stop and policy.compacts

    x_adv = out_adv.clone()
    x_best = x_adv.clone()
    x_best_adv = x_adv.clone()
    # Row j + 1 holds step j's losses; row 0 is the reference's row -1 (still zero when its first checkpoint reads it).
    loss_steps = torch.zeros(n_iter + 1, len(x), device=x.device)
    loss_indiv, logits, grad = _loss_grad(model, x_adv, y, y_target, loss, eot_iter)
    grad_best = grad.clone()
    acc = logits.argmax(1) == y
    loss_best = loss_indiv.clone()
    step_size = torch.full((len(x), *([1] * (x.dim() - 1))), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_adv_old = x_adv.clone()
    k, counter3 = n_iter_2, 0
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones_like(loss_best)
    if norm == "Linf":
        lo, hi = x - eps, x + eps

    for i in range(n_iter):
        if early_stop and policy.check_now(i) and not bool(acc.any()):
            break
        if early_stop and policy.drop_now(i) and len(idx):
            # Fooled examples are done: record them and drop them from every per-example tensor (one sync).
            done = ~acc
            out_fooled[idx[done]] = True
            out_adv[idx[done]] = x_best_adv[done]
            keep = rows_to_keep(acc)
            if len(keep) == 0:
                idx = keep
                break
            if len(keep) < len(idx):
                idx, x, y, x_adv, x_adv_old, x_best, x_best_adv, grad, grad_best, acc = (
                    t[keep] for t in (idx, x, y, x_adv, x_adv_old, x_best, x_best_adv, grad, grad_best, acc)
                )
                loss_best, loss_best_last_check, reduced_last_check, step_size = (
                    t[keep] for t in (loss_best, loss_best_last_check, reduced_last_check, step_size)
                )
                loss_steps = loss_steps[:, keep]
                y_target = y_target[keep] if y_target is not None else None
                if norm == "Linf":
                    lo, hi = lo[keep], hi[keep]
        grad2 = x_adv - x_adv_old
        x_adv_old = x_adv
        a = 0.75 if i > 0 else 1.0
        if norm == "Linf":
            x1 = torch.clamp(torch.min(torch.max(x_adv + step_size * torch.sign(grad), lo), hi), 0.0, 1.0)
            x1 = torch.clamp(torch.min(torch.max(x_adv + (x1 - x_adv) * a + grad2 * (1 - a), lo), hi), 0.0, 1.0)
        else:
            x1 = x_adv + step_size * _normalize(grad, norm)
            x1 = torch.clamp(x + _normalize(x1 - x, norm) * torch.min(eps * torch.ones_like(x), _l2(x1 - x)), 0.0, 1.0)
            x1 = x_adv + (x1 - x_adv) * a + grad2 * (1 - a)
            x1 = torch.clamp(x + _normalize(x1 - x, norm) * torch.min(eps * torch.ones_like(x), _l2(x1 - x)), 0.0, 1.0)
        x_adv = x1
        loss_indiv, logits, grad = _loss_grad(model, x_adv, y, y_target, loss, eot_iter)
        pred = logits.argmax(1) == y
        if first:
            # Keep the first fooling iterate: an example already fooled is not overwritten before it leaves.
            x_best_adv = torch.where(view_per_example(~pred & acc, x), x_adv, x_best_adv)
        else:
            x_best_adv = torch.where(view_per_example(~pred, x), x_adv, x_best_adv)
        acc = acc & pred
        loss_steps[i + 1] = loss_indiv
        better = loss_indiv > loss_best
        x_best = torch.where(view_per_example(better, x), x_adv, x_best)
        grad_best = torch.where(view_per_example(better, x), grad, grad_best)
        loss_best = torch.where(better, loss_indiv, loss_best)
        counter3 += 1
        if counter3 == k:
            # Halve the step where the loss oscillated or did not improve since the last checkpoint, restart from the best point.
            # Steps i-k+1 .. i against their predecessors in one comparison (counts are exact in float, in any order).
            rises = (loss_steps[i - k + 2 : i + 2] > loss_steps[i - k + 1 : i + 1]).float().sum(0)
            osc = (rises <= k * rho * torch.ones_like(rises)).float()
            no_impr = (1.0 - reduced_last_check) * (loss_best_last_check >= loss_best).float()
            osc = torch.max(osc, no_impr)
            reduced_last_check = osc.clone()
            loss_best_last_check = loss_best.clone()
            halve = osc > 0
            step_size = torch.where(view_per_example(halve, x), step_size / 2.0, step_size)
            x_adv = torch.where(view_per_example(halve, x), x_best, x_adv)
            grad = torch.where(view_per_example(halve, x), grad_best, grad)
            k = max(k - size_decr, n_iter_min)
            counter3 = 0

    if len(idx):
        done = ~acc
        out_fooled[idx[done]] = True
        out_adv[idx[done]] = x_best_adv[done]
    return out_fooled, out_adv


def _start(x: Tensor, eps: float, norm: str, gen: torch.Generator) -> Tensor:
    """The reference's random start (drawn on the CPU generator, so CPU and accelerator runs start alike)."""
    return x + eps * torch.ones_like(x) * _normalize(reference_draw(x.shape, norm, gen, x), norm)


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "Linf",
    loss: str = "ce",
    n_iter: int = 100,
    n_restarts: int = 1,
    seed: int = 0,
    rho: float = 0.75,
    eot_iter: int = 1,
    early_stop: bool = True,
) -> Tensor:
    """Untargeted APGD (`loss` 'ce' or 'dlr') with restarts on the still-robust examples; clean `x` where it failed."""

    def run(_: int, todo: Tensor, gen: torch.Generator, __: Tensor) -> tuple[Tensor, Tensor]:
        xs = x[todo]
        return apgd_single_run(model, xs, y[todo], eps, norm, loss, n_iter, _start(xs, eps, norm, gen), None, rho, eot_iter, early_stop)

    return seeded_restarts(model, x, y, seed, n_restarts, run)


def apgd_targeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "Linf",
    n_iter: int = 100,
    n_restarts: int = 1,
    n_target_classes: int = 9,
    seed: int = 0,
    rho: float = 0.75,
    eot_iter: int = 1,
    early_stop: bool = True,
) -> Tensor:
    """APGD-T: targeted DLR towards the 2nd, 3rd, ... highest-scoring clean classes in turn, on the still-robust examples."""

    def run(r: int, todo: Tensor, gen: torch.Generator, _: Tensor) -> tuple[Tensor, Tensor]:
        # Runs 0 .. n_restarts-1 target the 2nd most likely clean class, the next ones the 3rd, and so on, ranked
        # on a clean pass over this run's batch, as the reference does (logits can depend on the batch's make-up).
        xs = x[todo]
        with torch.no_grad():
            y_target = model(xs).sort(dim=1)[1][:, -(2 + r // n_restarts)]
        return apgd_single_run(model, xs, y[todo], eps, norm, "dlr-targeted", n_iter, _start(xs, eps, norm, gen), y_target, rho, eot_iter, early_stop)

    return seeded_restarts(model, x, y, seed, n_target_classes * n_restarts, run)


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
