"""Machinery the attack loops share: the compaction policy per device, restarts over surviving examples, the
seeded generator scaffold, the margin loss and input gradients."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.attack import view_per_example
from harness.api.errors import AttackError

COMPACT, MASKS = "compact", "masks"
# Forces one policy on every device (tests run the accelerator policy on the CPU with it); unset: per device.
POLICY_ENV = "HARNESS_ATTACK_POLICY"
_forced: list[str] = []


@dataclass(frozen=True)
class Policy:
    """How an iterative attack treats the examples it has finished with (fooled, or within the budget).

    - 'compact' (the CPU): drop them from every per-example tensor after each step. Reading the mask costs nothing
      on the CPU and the dropped rows stop costing compute.
    - 'masks' (accelerators): never re-index; finished rows are frozen by `torch.where` (or keep iterating exactly
      as the reference's do), and the host reads one "all finished?" flag only after steps 1, 2, 4, 8, 16 and then
      every `every` steps, so the device queue never waits on the host in between. The batch the model sees keeps
      the reference's composition, hence its kernels and rounding.
    Neither changes which examples end up fooled; the policy only decides the cost.
    """

    mode: str
    every: int = 16

    @property
    def compacts(self) -> bool:
        """Whether finished rows leave the batch (else they stay, masked)."""
        return self.mode == COMPACT

    def drop_now(self, step: int) -> bool:
        """Compact policy: whether to drop finished rows before `step` (every step but the first)."""
        return self.mode == COMPACT and step > 0

    def check_now(self, step: int) -> bool:
        """Masks policy: whether to read "is every example finished?" before `step` (one host sync)."""
        return self.mode == MASKS and step > 0 and (step & (step - 1) == 0 or step % self.every == 0)


def policy_for(device: torch.device) -> Policy:
    """The compaction policy for `device`: 'compact' on the CPU, 'masks' elsewhere, unless one is forced."""
    mode = _forced[-1] if _forced else os.environ.get(POLICY_ENV) or (COMPACT if device.type == "cpu" else MASKS)
    if mode not in (COMPACT, MASKS):
        raise AttackError(f"{POLICY_ENV}={mode!r} is not a compaction policy; accepted: {COMPACT}, {MASKS}.")
    return Policy(mode)


@contextmanager
def forced_policy(mode: str) -> Iterator[None]:
    """Run every attack loop under policy `mode` whatever the device (the accelerator's policy on the CPU, in tests)."""
    if mode not in (COMPACT, MASKS):
        raise AttackError(f"unknown compaction policy {mode!r}; accepted: {COMPACT}, {MASKS}.")
    _forced.append(mode)
    try:
        yield
    finally:
        _forced.pop()


def rows_to_keep(active: Tensor) -> Tensor:
    """Compact policy: the rows to keep, the active ones in order; a lone active row keeps one finished row beside
    it, because some CPU kernels take another path for a batch of one (gemv), which rounds differently."""
    keep = active.nonzero().squeeze(1)
    if len(keep) == 1 and len(active) > 1:
        keep = torch.cat([keep, (~active).nonzero()[0]]).sort().values
    return keep


def attack_until_fooled(x: Tensor, correct: Tensor, runs: int, run: Callable[[int, Tensor], tuple[Tensor, Tensor]]) -> Tensor:
    """Adversarial images from `runs` successive runs (restarts, target classes), each on the examples still robust.

    `correct` marks the examples classified correctly to begin with; `run(r, todo)` attacks rows `todo` of `x` and
    returns which of them it fooled and its images. Where every run failed, the clean image is returned.
    """
    adv, robust = x.clone(), correct.clone()
    for r in range(runs):
        todo = robust.nonzero().squeeze(1)  # one host sync per run: the reference's batch is the robust rows
        if len(todo) == 0:
            break
        fooled, adv_s = run(r, todo)
        robust[todo[fooled]] = False
        adv[todo[fooled]] = adv_s[fooled]
    return adv


SeededRun = Callable[[int, Tensor, torch.Generator, Tensor], tuple[Tensor, Tensor]]


def seeded_restarts(model: nn.Module, x: Tensor, y: Tensor, seed: int, runs: int, run: SeededRun) -> Tensor:
    """The scaffold of AutoAttack's components: one private CPU generator seeded like the reference's global one
    (so CPU and accelerator runs draw alike and the caller's random state is left alone), one clean pass, then
    `runs` runs on the still-robust rows. `run(r, todo, gen, clean_logits)` returns (fooled, images) for rows `todo`.
    """
    x, y = x.detach(), y.detach()
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        logits = model(x)
    return attack_until_fooled(x, logits.argmax(1) == y, runs, lambda r, todo: run(r, todo, gen, logits))


def reference_draw(shape: torch.Size, norm: str, gen: torch.Generator, like: Tensor) -> Tensor:
    """pyautoattack's random direction for a start or restart: uniform in [-1, 1] (Linf) or Gaussian (L2), drawn on
    the CPU generator in the reference's order, then moved to `like`'s device and dtype in one copy."""
    t = (2 * torch.rand(shape, generator=gen) - 1) if norm == "Linf" else torch.randn(shape, generator=gen)
    return t.to(device=like.device, dtype=like.dtype)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example logit of the true class minus the largest other logit (negative = misclassified)."""
    real = logits.gather(1, y[:, None]).squeeze(1)
    return real - logits.scatter(1, y[:, None], float("-inf")).amax(1)


def l2_normalize(g: Tensor) -> Tensor:
    """Per-example unit-L2 direction (zero stays zero)."""
    return g / view_per_example(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)


def input_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient of the summed cross-entropy with respect to the input, and the logits."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    # Summed (not averaged) so the per-example gradient does not depend on the batch size.
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return grad, logits.detach()
