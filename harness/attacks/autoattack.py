"""AutoAttack (Croce & Hein, Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks, ICML 2020).

Never weaker than the reference, by construction. Each component is the reference's algorithm with its random
draws; the harness saves work only by early stop. Floating-point noise could still make the harness keep an
example robust that the reference breaks in three ways, each closed here:

- Compaction changes the batch a model sees, and some kernels (cuDNN, some BLAS paths) round differently per
  batch size: trajectories would drift apart. Compaction runs only where the model's outputs are bit-for-bit
  independent of the batch (`batch_independent`, probed once per call on the CPU; compaction keeps two rows or
  more, as a batch of one takes other kernels on some CPUs); everywhere else the
  components run under the 'masks' policy, whose batches are the reference's, row for row.
- Early stop keeps an example's first fooling iterate, which can be a hair's breadth from the boundary; the
  reference keeps iterating and returns its last fooling iterate. If the re-check of a component's output says
  "correct" for an example the component reported fooled, the component is re-run as the reference runs it (no
  early stop, 'masks' policy, the same batch and draws) and either run's success counts.
- The re-check of the final images happens in another batch than the component's own check; the trace keeps
  the component's verdict and the evaluation counts an example robust only if both say so
  (`harness.evaluation.runs.attack_correct`).
"""

from __future__ import annotations

import contextlib
import logging

import torch
from pyautoattack import AutoAttack as ReferenceAutoAttack
from torch import Tensor, nn

from harness.api.attack import (
    REFERENCE_NORMS,
    Attack,
    check_threat_model,
    view_per_example,
)
from harness.api.errors import AttackError
from harness.attacks.apgd import apgd, apgd_targeted
from harness.attacks.common import MASKS, forced_policy
from harness.attacks.fab import fab
from harness.attacks.square import square_linf

VERSIONS = ("standard", "plus", "rand")


def batch_independent(model: nn.Module, x: Tensor) -> bool:
    """Whether the model's logits for a row are bit-for-bit the same in sub-batches of `x` (odd rows, last two rows).

    Compaction never leaves fewer than two rows in a batch (`rows_to_keep`), so batches of one are not probed.
    Accelerators are not probed: their kernels may change with any batch size, so they always run exact batches.
    """
    if x.device.type != "cpu":
        return False
    if len(x) < 3:
        return True  # nothing to compact below two rows
    with torch.no_grad():
        full = model(x)
        return torch.equal(model(x[1::2]), full[1::2]) and torch.equal(model(x[-2:]), full[-2:])


def run_component(aa: ReferenceAutoAttack, name: str, x: Tensor, y: Tensor, early_stop: bool = True) -> Tensor:
    """One AutoAttack component on (x, y), configured exactly as the reference's run_standard_evaluation does.

    APGD, FAB and Linf Square run the harness's versions (harness/apgd.py, fab.py, square.py: the reference's
    steps, random draws and settings, read from the reference object, with per-example early stop); L2 Square
    runs the reference code.
    """
    seed = aa.get_seed()
    if name in ("apgd-ce", "apgd-dlr"):
        a = aa.apgd
        return apgd(aa.model, x, y, a.eps, a.norm, name[5:], a.n_iter, a.n_restarts, seed, a.thr_decr, a.eot_iter, early_stop)
    if name == "apgd-t":
        a = aa.apgd_targeted
        return apgd_targeted(aa.model, x, y, a.eps, a.norm, a.n_iter, a.n_restarts, a.n_target_classes, seed, a.thr_decr, a.eot_iter, early_stop)
    if name in ("fab", "fab-t"):
        f = aa.fab
        # The reference runs FAB-T with one restart whatever n_restarts says.
        restarts = 1 if name == "fab-t" else f.n_restarts
        return fab(aa.model, x, y, f.eps, f.norm, name == "fab-t", f.n_iter, restarts, f.n_target_classes, seed, f.alpha_max, f.eta, f.beta, early_stop)
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
        exact = contextlib.nullcontext() if batch_independent(model, x) else forced_policy(MASKS)
        with exact:
            for name in aa.attacks_to_run:
                idx = robust.nonzero().squeeze(1)  # one host sync per component, as in the reference
                if len(idx):
                    adv, fooled = self.component(aa, name, model, x[idx], y[idx])
                    robust[idx[fooled]] = False
                    x_adv[idx[fooled]] = adv[fooled]
                trace[name] = robust.clone()
        return x_adv, trace

    @staticmethod
    def component(aa: ReferenceAutoAttack, name: str, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One component's images and which of them fool the model, re-run as the reference runs it (no early stop)
        when an example it reported fooled is not fooled on re-check."""
        adv = run_component(aa, name, x, y).detach()
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y
        # Components return the clean image where they failed: a changed image is a reported success.
        doubtful = (adv != x).flatten(1).any(1) & ~fooled
        if bool(doubtful.any()):
            with forced_policy(MASKS):
                again = run_component(aa, name, x, y, early_stop=False).detach()
            with torch.no_grad():
                fooled_again = model(again).argmax(1) != y
            adv = torch.where(view_per_example(fooled_again & ~fooled, adv), again, adv)
            fooled = fooled | fooled_again
        return adv, fooled
