"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), step-for-step the AutoAttack reference's.

The iteration, its projections (imported from pyautoattack, not rewritten), restarts, target order and random
draws are those of pyautoattack's `FABAttack_PT`. Two changes save compute without changing which examples end up
within eps of an adversarial point:

- Under the CPU's compaction policy (`harness.attacks.common.policy_for`), one forward pass per step instead of
  two: the reference predicts the new iterate without a graph, then runs a forward pass with a graph on (nearly)
  the same point for the next step's gradients. Here the prediction's forward pass keeps its graph, and only the
  rows that the reference moved back towards the clean image after an adversarial step are recomputed; when
  many rows did so in the last step, the step runs as the reference's. Deciding that reads a count on the host,
  so under an accelerator's policy every step runs as the reference's, with no host sync.
- Early stop (with `stop_eps`): an example whose best adversarial point is already within `stop_eps` is counted
  as fooled by AutoAttack whatever FAB finds later, so it leaves the batch (CPU), or the run ends once every
  example is there (accelerators: the host reads that flag after steps 1, 2, 4, 8, 16, then every 16).
"""

from __future__ import annotations

import torch
from pyautoattack.fab_projections import projection_l2, projection_linf
from torch import Tensor, nn

from harness.api.attack import norms
from harness.attacks.common import (
    policy_for,
    reference_draw,
    rows_to_keep,
    seeded_restarts,
)

PROJECTIONS = {"Linf": projection_linf, "L2": projection_l2}


class _Graph:
    """A forward pass kept with its graph, so the same pass gives the prediction and the next step's gradients."""

    def __init__(self, model: nn.Module, x: Tensor) -> None:
        self.im = x.clone().requires_grad_()
        with torch.enable_grad():
            self.logits = model(self.im)

    def diffs(self, la: Tensor, la_target: Tensor | None) -> tuple[Tensor, Tensor]:
        """The reference's (df, dg): logit differences to the true class and their input gradients."""
        u = torch.arange(len(la), device=la.device)
        y = self.logits
        if la_target is not None:
            with torch.enable_grad():
                diffy = -(y[u, la] - y[u, la_target])
                total = diffy.sum()
            (g,) = torch.autograd.grad(total, self.im)
            return diffy.detach().unsqueeze(1), g.unsqueeze(1)
        # One backward pass per class on the same graph, as the reference does (the last one frees it).
        k = y.shape[-1]
        g2 = torch.zeros([k, *self.im.shape], device=self.im.device)
        mask = torch.zeros_like(y)
        for c in range(k):
            mask[:, c] = 1.0
            (g2[c],) = torch.autograd.grad(y, self.im, grad_outputs=mask, retain_graph=c < k - 1)
            mask[:, c] = 0.0
        g2 = g2.transpose(0, 1)
        y2 = y.detach()
        df = y2 - y2[u, la].unsqueeze(1)
        dg = g2 - g2[u, la].unsqueeze(1)
        df[u, la] = 1e10
        return df, dg


def fab_single_run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str,
    n_iter: int,
    eps: float,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    target_class: int | None = None,
    gen: torch.Generator | None = None,
    stop_eps: float | None = None,
) -> Tensor:
    """One FAB run: the smallest adversarial point found per example (`x` where none was), as the reference's."""
    x, y = x.detach(), y.detach()
    with torch.no_grad():
        logits0 = model(x)
    pred = logits0.argmax(1) == y
    adv_c = x.clone()
    pidx = pred.nonzero().squeeze(1)
    if len(pidx) == 0:
        return adv_c
    la_t = logits0.sort(dim=-1)[1][:, -target_class][pidx] if target_class is not None else None
    im2, la2 = x[pidx], y[pidx]
    bs, shape = len(pidx), (-1, *([1] * (x.dim() - 1)))
    adv, res2 = im2.clone(), torch.full((bs,), 1e10, device=x.device)
    x1 = im2.clone()
    if gen is not None:
        # The reference's random restart: half of eps in a random direction (drawn on the CPU generator).
        t = reference_draw(x1.shape, norm, gen, x1)
        x1 = im2 + torch.min(res2, eps * torch.ones(res2.shape, device=x.device)).reshape(shape) * t / (
            norms(t, norm, squares=True).reshape(shape)) * 0.5
        x1 = x1.clamp(0.0, 1.0)
    out_adv, out_res = adv.clone(), res2.clone()
    idx = torch.arange(bs, device=x.device)  # rows of out_* still in the batch
    policy = policy_for(x.device)
    graph: _Graph | None
    graph = _Graph(model, x1)
    fix, fix_rows, fuse = None, None, policy.compacts
    backward_cost = 2 * (1 if la_t is not None else int(graph.logits.shape[-1]))
    for it in range(n_iter):
        if stop_eps is not None and policy.check_now(it) and bool((res2 <= stop_eps).all()):
            break
        if graph is None:
            graph = _Graph(model, x1)
        with torch.no_grad():
            df, dg = graph.diffs(la2, la_t)
            if fix is not None:
                df_fix, dg_fix = fix.diffs(la2[fix_rows], la_t[fix_rows] if la_t is not None else None)
                df[fix_rows], dg[fix_rows] = df_fix, dg_fix
            n = len(idx)
            u1 = torch.arange(n, device=x.device)
            flat_dg = dg.reshape(dg.shape[0], dg.shape[1], -1)
            dist1 = df.abs() / (1e-12 + (flat_dg.abs().sum(dim=-1) if norm == "Linf" else (flat_dg**2).sum(dim=-1).sqrt()))
            ind = dist1.min(dim=1)[1]
            dg2 = dg[u1, ind]
            b = -df[u1, ind] + (dg2 * x1).reshape(n, -1).sum(dim=-1)
            w = dg2.reshape([n, -1])
            d3 = PROJECTIONS[norm](torch.cat((x1.reshape([n, -1]), im2.reshape([n, -1])), 0), torch.cat((w, w), 0), torch.cat((b, b), 0))
            d1, d2 = torch.reshape(d3[:n], x1.shape), torch.reshape(d3[-n:], x1.shape)
            a0 = (d3.abs().max(dim=1, keepdim=True)[0] if norm == "Linf" else (d3**2).sum(dim=1, keepdim=True).sqrt()).view(shape)
            a0 = torch.max(a0, 1e-8 * torch.ones(a0.shape, device=x.device))
            a1, a2 = a0[:n], a0[-n:]
            alpha = torch.min(torch.max(a1 / (a1 + a2), torch.zeros(a1.shape, device=x.device)), alpha_max * torch.ones(a1.shape, device=x.device))
            x1 = ((x1 + eta * d1) * (1 - alpha) + (im2 + d2 * eta) * alpha).clamp(0.0, 1.0)
            if stop_eps is not None and policy.drop_now(it):
                # Rows already within stop_eps of an adversarial point are done: write them out, drop them.
                keep = rows_to_keep(res2 > stop_eps)
                if len(keep) < n:
                    out_adv[idx], out_res[idx] = adv, res2
                    if len(keep) == 0:
                        idx = keep
                        break
                    idx, x1, im2, la2, adv, res2 = idx[keep], x1[keep], im2[keep], la2[keep], adv[keep], res2[keep]
                    la_t = la_t[keep] if la_t is not None else None
        # Predict the new iterate with a graph (reused for the next step) while few rows turned adversarial in the
        # last step, else without one, as the reference does: recomputing many rows costs more than it saves.
        fix, fix_rows = None, None
        if fuse:
            graph = _Graph(model, x1)
            logits = graph.logits
        else:
            graph = None
            with torch.no_grad():
                logits = model(x1)
        with torch.no_grad():
            is_adv = logits.argmax(1) != la2
            t = norms(x1 - im2, norm, squares=True)
            better = is_adv & (t < res2)
            adv = torch.where(better.view(shape), x1, adv)
            res2 = torch.where(better, t, res2)
            if not policy.compacts:
                # The reference steps adversarial rows back towards the clean image (no count read: no host sync).
                x1 = torch.where(is_adv.view(shape), im2 + (x1 - im2) * beta, x1)
                continue
            m = int(is_adv.sum())
            # A backward pass costs about two forward passes (per class for untargeted FAB).
            fuse = m * (1 + backward_cost) < len(x1)
            if m:
                # The reference steps adversarial rows back towards the clean image: they need a new pass.
                x1 = torch.where(is_adv.view(shape), im2 + (x1 - im2) * beta, x1)
                if graph is not None and it + 1 < n_iter:
                    fix_rows = is_adv.nonzero().squeeze(1)
                    fix = _Graph(model, x1[fix_rows])
    if len(idx):
        out_adv[idx], out_res[idx] = adv, res2
    succ = out_res < 1e10
    adv_c[pidx[succ]] = out_adv[succ]
    return adv_c


def fab(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "Linf",
    targeted: bool = True,
    n_iter: int = 100,
    n_restarts: int = 1,
    n_target_classes: int = 9,
    seed: int = 0,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    early_stop: bool = True,
) -> Tensor:
    """FAB (FAB-T when `targeted`) as AutoAttack runs it: points within eps that fool the model, clean `x` elsewhere."""

    def run(r: int, todo: Tensor, gen: torch.Generator, _: Tensor) -> tuple[Tensor, Tensor]:
        # Targeted: runs 0 .. n_restarts-1 aim at the 2nd most likely clean class, the next ones the 3rd, ...
        target_class = 2 + r // n_restarts if targeted else None
        xs, ys = x[todo], y[todo]
        adv_s = fab_single_run(model, xs, ys, norm, n_iter, eps, alpha_max, eta, beta, target_class,
                               gen if r % n_restarts > 0 else None, eps if early_stop else None)
        with torch.no_grad():
            return (model(adv_s).argmax(1) != ys) & (norms(xs - adv_s, norm, squares=True) <= eps), adv_s

    return seeded_restarts(model, x, y, seed, n_restarts * (n_target_classes if targeted else 1), run)
