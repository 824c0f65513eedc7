"""AutoAttack (Croce & Hein, Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks, ICML 2020)."""

from __future__ import annotations

import logging

import torch
from pyautoattack import AutoAttack as ReferenceAutoAttack
from torch import Tensor, nn

from harness.api.attack import REFERENCE_NORMS, Attack, check_threat_model
from harness.api.errors import AttackError
from harness.attacks.apgd import apgd, apgd_targeted
from harness.attacks.fab import fab
from harness.attacks.square import square_linf

VERSIONS = ("standard", "plus", "rand")

def run_component(aa: ReferenceAutoAttack, name: str, x: Tensor, y: Tensor) -> Tensor:
    """One AutoAttack component on (x, y), configured exactly as the reference's run_standard_evaluation does.

    APGD, FAB and Linf Square run the harness's versions (harness/apgd.py, fab.py, square.py: the reference's
    steps, random draws and settings, read from the reference object, with per-example early stop); L2 Square
    runs the reference code.
    """
    seed = aa.get_seed()
    if name in ("apgd-ce", "apgd-dlr"):
        a = aa.apgd
        return apgd(aa.model, x, y, a.eps, a.norm, name[5:], a.n_iter, a.n_restarts, seed, a.thr_decr, a.eot_iter)
    if name == "apgd-t":
        a = aa.apgd_targeted
        return apgd_targeted(aa.model, x, y, a.eps, a.norm, a.n_iter, a.n_restarts, a.n_target_classes, seed, a.thr_decr, a.eot_iter)
    if name in ("fab", "fab-t"):
        f = aa.fab
        # The reference runs FAB-T with one restart whatever n_restarts says.
        restarts = 1 if name == "fab-t" else f.n_restarts
        return fab(aa.model, x, y, f.eps, f.norm, name == "fab-t", f.n_iter, restarts, f.n_target_classes, seed, f.alpha_max, f.eta, f.beta)
    if name == "square":
        sq = aa.square
        if sq.norm == "Linf" and not sq.rescale_schedule and sq.loss == "margin":
            return square_linf(aa.model, x, y, sq.eps, sq.n_queries, sq.p_init, sq.n_restarts, seed)
        sq.seed = seed
        return sq.perturb(x, y)
    raise AttackError(f"autoattack: unknown component {name!r}; accepted: apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square.")


class AutoAttack(Attack):
    """The AutoAttack protocol through the reference code (pyautoattack): APGD-CE, APGD-T, FAB-T, Square in sequence."""

    def __init__(self, version: str = "standard", norm: str = "linf", n_queries: int | None = None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if version not in VERSIONS:
            raise AttackError(f"autoattack: unknown version {version!r}; accepted: {', '.join(VERSIONS)}.")
        self.version = version
        self.threat_model = check_threat_model(norm, "autoattack")
        # None keeps the protocol's 5000 Square queries; a smaller number is a cheaper, weaker, non-standard run.
        self.n_queries = n_queries

    def reference(self, model: nn.Module, eps: float, device: torch.device) -> ReferenceAutoAttack:
        """The reference AutoAttack object for this version, norm and eps."""
        aa = ReferenceAutoAttack(model, norm=REFERENCE_NORMS[self.threat_model], eps=eps, version=self.version, seed=self.seed, device=device)
        aa.logger = logging.getLogger("harness.autoattack")
        if self.n_queries is not None:
            aa.square.n_queries = self.n_queries
        return aa

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """The final adversarial examples of the whole ensemble."""
        return self.perturb_traced(model, x, y, eps)[0]

    def perturb_traced(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> tuple[Tensor, dict[str, Tensor]]:
        """Each component attacks only the examples every earlier one failed on; returns who survived each."""
        aa = self.reference(model, eps, x.device)
        x = x.detach()
        x_adv = x.clone()
        trace: dict[str, Tensor] = {}
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        for name in aa.attacks_to_run:
            idx = robust.nonzero().squeeze(1)  # one host sync per component, as in the reference
            if len(idx):
                adv = run_component(aa, name, x[idx], y[idx]).detach()
                with torch.no_grad():
                    fooled = model(adv).argmax(1) != y[idx]
                robust[idx[fooled]] = False
                x_adv[idx[fooled]] = adv[fooled]
            trace[name] = robust.clone()
        return x_adv, trace
