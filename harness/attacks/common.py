"""Machinery the attack loops share: restarts over surviving examples, compaction schedule, input gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.attack import view_per_example


def compact_now(step: int, device: torch.device, every: int = 16) -> bool:
    """Whether an iterative attack should drop its finished examples from the batch after `step` steps.

    Compacting needs the host to read a mask. On the CPU that costs nothing, so it happens every step; on an
    accelerator it would stall the queue, so it happens after steps 1, 2, 4, 8, ... and then every `every` steps.
    The schedule changes only the cost, never the result: finished examples are frozen by masks in between.
    """
    if step <= 0:
        return False
    return device.type == "cpu" or step & (step - 1) == 0 or step % every == 0


def attack_until_fooled(x: Tensor, correct: Tensor, runs: int, run: Callable[[int, Tensor], tuple[Tensor, Tensor]]) -> Tensor:
    """Adversarial images from `runs` successive runs (restarts, target classes), each on the examples still robust.

    `correct` marks the examples classified correctly to begin with; `run(r, todo)` attacks rows `todo` of `x` and
    returns which of them it fooled and its images. Where every run failed, the clean image is returned.
    """
    adv, robust = x.clone(), correct.clone()
    for r in range(runs):
        todo = robust.nonzero().squeeze(1)
        if len(todo) == 0:
            break
        fooled, adv_s = run(r, todo)
        robust[todo[fooled]] = False
        adv[todo[fooled]] = adv_s[fooled]
    return adv


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
