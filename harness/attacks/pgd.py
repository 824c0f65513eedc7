"""Projected gradient descent on the cross-entropy (Madry et al. 2018), shared by pgd_linf, pgd_l2 and the sanity checks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from harness.api.attack import Attack, project, view_per_example
from harness.api.errors import AttackError
from harness.attacks.common import input_grad, l2_normalize, policy_for, rows_to_keep


def random_start(x: Tensor, eps: float, threat_model: str, gen: torch.Generator) -> Tensor:
    """A random point of the eps-ball around `x`, clipped to [0, 1]."""
    if threat_model == "linf":
        noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype).mul_(2 * eps).sub_(eps)
    else:
        # Uniform direction, radius uniform in [0, eps] (the usual L2 PGD start, as in torchattacks' PGDL2).
        direction = l2_normalize(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
        radius = torch.rand(len(x), generator=gen, device=x.device, dtype=x.dtype) * eps
        noise = direction * view_per_example(radius, x)
    return (x + noise).clamp_(0.0, 1.0)


def pgd_run(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, threat_model: str, steps: int, alpha: float, start: Tensor, early_stop: bool = False
) -> Tensor:
    """`steps` projected ascent steps from `start`; returns the last iterate.

    With `early_stop`, an example stops at the first iterate the model misclassifies (that iterate is returned):
    until then its trajectory is the plain one, so the fooled set can only grow. Under the device's compaction
    policy (`harness.attacks.common.policy_for`) fooled examples either leave the batch (CPU) or stay in it
    frozen by a mask, the loop ending once all are fooled (accelerators: no per-step host sync).
    """
    x_adv, out = start, start.clone()
    policy = policy_for(x.device)
    idx = torch.arange(len(x), device=x.device)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    linf = threat_model == "linf"
    if linf:
        # The Linf ball intersected with the pixel box is a box: projection is one clamp to precomputed bounds.
        lo, hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    for i in range(steps):
        if early_stop and policy.drop_now(i):
            out[idx[done]] = x_adv[done]
            keep = rows_to_keep(~done)
            idx, x, y, x_adv, done = idx[keep], x[keep], y[keep], x_adv[keep], done[keep]
            if linf:
                lo, hi = lo[keep], hi[keep]
            if len(idx) == 0:
                return out
        elif early_stop and policy.check_now(i) and bool(done.all()):
            break
        grad, logits = input_grad(model, x_adv, y)
        if linf:
            x_new = torch.minimum(torch.maximum(x_adv.detach().add(grad.sign(), alpha=alpha), lo), hi)
        else:
            x_new = project(x_adv.detach().add(l2_normalize(grad), alpha=alpha), x, eps, "l2")
        if early_stop:
            done = done | (logits.argmax(1) != y)
            x_new = torch.where(view_per_example(done, x), x_adv, x_new)
        x_adv = x_new
    out[idx] = x_adv.detach()
    return out


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    threat_model: str,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    rand_init: bool = True,
    seed: int = 0,
    early_stop: bool = False,
) -> Tensor:
    """PGD with restarts: each example keeps the first restart that fools the model, else the last iterate."""
    alpha = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x, best = x.detach(), x.detach().clone()
    todo = torch.arange(len(x), device=x.device)
    for r in range(restarts):
        xs, ys = x[todo], y[todo]
        start = random_start(xs, eps, threat_model, gen) if rand_init else xs.clone()
        adv = pgd_run(model, xs, ys, eps, threat_model, steps, alpha, start, early_stop)
        best[todo] = adv
        if r + 1 < restarts:
            with torch.inference_mode():
                still = model(adv).argmax(1) == ys
            # One host sync per restart: later restarts only attack the examples not yet fooled.
            todo = todo[still]
            if len(todo) == 0:
                break
    return best


class PGD(Attack):
    """Projected gradient ascent on cross-entropy from a random start in the eps-ball, projected each step; random restarts."""

    def __init__(
        self, steps: int = 10, step_size: float | None = None, restarts: int = 1, random_start: bool = True, early_stop: bool = True, seed: int = 0
    ) -> None:
        super().__init__(seed=seed)
        if steps < 1 or restarts < 1:
            raise AttackError(f"pgd_{self.threat_model}: steps={steps} and restarts={restarts} must both be >= 1.")
        self.steps, self.step_size, self.restarts, self.random_start = steps, step_size, restarts, random_start
        # An example counts as fooled at the first iterate that fools it; False keeps plain last-iterate PGD.
        self.early_stop = early_stop

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """Step size defaults to 2.5 * eps / steps (Madry et al.)."""
        return pgd(model, x, y, eps, self.threat_model, self.steps, self.step_size, self.restarts, self.random_start, self.seed, self.early_stop)


class PGDLinf(PGD):
    """Signed-gradient ascent on cross-entropy from a random start in the Linf ball, projected each step; random restarts."""

    threat_model = "linf"


class PGDL2(PGD):
    """Normalised-gradient ascent on cross-entropy from a random start in the L2 ball, projected each step; random restarts."""

    threat_model = "l2"
