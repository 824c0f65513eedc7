"""Unstructured magnitude pruning: weight masks that survive fine-tuning, baked in by `finalize`."""

from __future__ import annotations

import math
from typing import ClassVar, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from harness.api.nets import inner
from harness.api.pruner import PruneContext, Pruner, check_sparsity_range
from harness.pruning.ranking import mask_lowest


def prunable_weights(net: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    """Layers whose weights count toward unstructured sparsity: every Conv2d and Linear (biases and BN stay)."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _set_mask(module: nn.Module, mask: Tensor) -> None:
    """Install or replace the weight mask (torch.nn.utils.prune keeps weight = weight_orig * weight_mask)."""
    if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
        cast(Tensor, module.weight_mask).copy_(mask)
    else:
        torch_prune.custom_from_mask(module, "weight", mask)


class UnstructuredPruner(Pruner):
    """Zeroes individual weights with the smallest |w|; sparsity = fraction of prunable weights zeroed."""

    family: ClassVar[str] = "unstructured"
    structured: ClassVar[bool] = False

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
        """Mask round(sparsity x weights) weights globally or per layer, in one or several steps."""
        check_sparsity_range(sparsity, "unstructured")
        if sparsity == 0.0:
            return model
        layers = prunable_weights(inner(model))
        for step, target in enumerate(self.step_targets(sparsity)):
            # Already-masked weights score 0, so masks only grow from step to step.
            with torch.no_grad():
                scores = [m.weight.detach().abs() for m in layers]
                if self.global_ranking:
                    flat = torch.cat([s.flatten() for s in scores])
                    masks = mask_lowest(flat, math.floor(target * flat.numel() + 0.5)).split([s.numel() for s in scores])
                    masks = [mk.view_as(s) for mk, s in zip(masks, scores)]
                else:
                    masks = [mask_lowest(s, math.floor(target * s.numel() + 0.5)) for s in scores]
                for m, mk in zip(layers, masks):
                    _set_mask(m, mk)
            if ctx.fine_tune is not None and step < self.steps - 1:
                ctx.fine_tune(model, step)
        return model

    def finalize(self, model: nn.Module) -> nn.Module:
        """Make the masks permanent: plain weight tensors with zeros, so counts and checkpoints are honest."""
        for m in prunable_weights(inner(model)):
            if torch_prune.is_pruned(m) and hasattr(m, "weight_orig"):
                torch_prune.remove(m, "weight")
        return model

    def achieved_sparsity(self, dense: nn.Module, pruned: nn.Module) -> float:
        """Fraction of the dense model's prunable weights that are zero in the pruned one."""
        total = sum(m.weight.numel() for m in prunable_weights(inner(dense)))
        nonzero = sum(int((m.weight != 0).sum()) for m in prunable_weights(inner(pruned)))
        return 1.0 - nonzero / total if total else 0.0

    def tolerance(self, dense: nn.Module) -> float:
        """Half a weight of rounding per layer (local ranking), plus one weight per layer for coincident zeros."""
        layers = prunable_weights(inner(dense))
        total = sum(m.weight.numel() for m in layers)
        return 1.5 * len(layers) / total if total else 0.0
