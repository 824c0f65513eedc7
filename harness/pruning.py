"""Pruner plugin contract, and the filter-pruning base that does the surgery with torch-pruning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch_pruning as tp
from torch import Tensor, nn

from harness.errors import PruningError
from harness.nets import inner


@dataclass
class PruneContext:
    """What a pruner may use besides the model: example input, calibration data, seed, a fine-tune hook."""

    example_inputs: Tensor  # one batch of [0, 1] pixels on the model's device
    calibration: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # a few training batches
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Called between the steps of an iterative schedule: fine_tune(model, step_index).
    fine_tune: Callable[[nn.Module, int], None] | None = None


class Pruner(ABC):
    """Turns a trained model into a pruned one at a requested sparsity."""

    family: ClassVar[str] = "filter"  # none | filter | layer | unstructured
    structured: ClassVar[bool] = True

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = False) -> None:
        if schedule not in ("oneshot", "iterative"):
            raise PruningError(f"schedule must be 'oneshot' or 'iterative', got {schedule!r}")
        if steps < 1:
            raise PruningError(f"steps must be >= 1, got {steps}")
        self.schedule = schedule
        self.steps = steps if schedule == "iterative" else 1
        self.global_ranking = global_ranking

    @abstractmethod
    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
        """Return the pruned model (it may be `model`, modified in place)."""

    def finalize(self, model: nn.Module) -> nn.Module:
        """Hook run after fine-tuning, before measuring and caching (e.g. to bake unstructured masks in)."""
        return model

    def achieved_sparsity(self, dense: nn.Module, pruned: nn.Module) -> float:
        """Measured sparsity in this pruner's own unit: here the fraction of prunable conv filters removed."""
        before = filter_counts(inner(dense))
        return 1.0 - filter_counts(inner(pruned)) / before if before else 0.0

    def tolerance(self, dense: nn.Module) -> float:
        """How far the achieved sparsity may fall from the request: one filter per prunable layer of rounding."""
        convs = prunable_convs(inner(dense))
        total = sum(m.out_channels for m in convs)
        return len(convs) / total if total else 0.0


def prunable_convs(net: nn.Module) -> list[nn.Conv2d]:
    """Conv layers whose output filters count toward filter sparsity (depthwise convs follow their input)."""
    return [m for m in net.modules() if isinstance(m, nn.Conv2d) and not _is_depthwise(m)]


def _is_depthwise(m: nn.Conv2d) -> bool:
    return m.groups > 1 and m.groups == m.in_channels


class FilterPruner(Pruner):
    """Removes whole conv filters ranked by `importance`; torch-pruning keeps coupled layers consistent."""

    family: ClassVar[str] = "filter"

    @abstractmethod
    def importance(self, model: nn.Module, ctx: PruneContext) -> tp.importance.Importance:
        """The torch-pruning importance that scores each channel group (lower = pruned first)."""

    def prepare(self, model: nn.Module, ctx: PruneContext) -> None:
        """Hook run before each pruning step (e.g. to collect gradients or activations)."""

    def ignored_layers(self, net: nn.Module) -> list[nn.Module]:
        """Layers whose outputs are never pruned: every Linear (the classifier and its inputs stay whole)."""
        return [m for m in net.modules() if isinstance(m, nn.Linear)]

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
        """Prune `sparsity` of the filters of every prunable group, in one or several steps."""
        if not 0.0 <= sparsity < 1.0:
            raise PruningError(f"filter sparsity must be in [0, 1), got {sparsity}")
        if sparsity == 0.0:
            return model
        net = inner(model)
        example = _normalised(model, ctx.example_inputs[:1])
        torch.manual_seed(ctx.seed)
        pruner = tp.pruner.MetaPruner(
            net,
            example,
            importance=self.importance(model, ctx),
            pruning_ratio=sparsity,
            iterative_steps=self.steps,
            global_pruning=self.global_ranking,
            ignored_layers=self.ignored_layers(net),
        )
        for step in range(self.steps):
            self.prepare(model, ctx)
            pruner.step()
            if ctx.fine_tune is not None and step < self.steps - 1:
                ctx.fine_tune(model, step)
        return model


class FilterScoreImportance(tp.importance.Importance):
    """Scores each channel by a per-filter function of the conv weights that output it, summed over the group."""

    def __init__(self, score: Callable[[Tensor], Tensor]) -> None:
        self.score = score

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor:
        """One score per channel of the group's root, summed over every conv whose filters it removes."""
        total: Tensor | None = None
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if not isinstance(layer, nn.Conv2d) or dep.pruning_fn is not tp.prune_conv_out_channels:
                continue
            root = group[i].root_idxs
            s = self.score(layer.weight.detach()[idxs]).float().flatten()
            if total is None:
                total = torch.zeros(len(group[0].idxs), device=s.device)
            total.scatter_add_(0, torch.as_tensor(root, device=s.device), s)
        if total is None:  # a group with no conv output (e.g. only BN): keep it ranked neutrally
            return torch.zeros(len(group[0].idxs))
        return total


class ScoredFilterPruner(FilterPruner):
    """A filter pruner defined by one scoring function over a conv's filters: the minimal plugin."""

    @abstractmethod
    def score(self, weight: Tensor) -> Tensor:
        """One importance per filter of `weight` (out, in, kh, kw); lower scores are pruned first."""

    def importance(self, model: nn.Module, ctx: PruneContext) -> tp.importance.Importance:
        """Wraps `score` as a torch-pruning importance."""
        return FilterScoreImportance(self.score)


def _normalised(model: nn.Module, x: Tensor) -> Tensor:
    """The input the inner network sees for pixel input `x`."""
    if hasattr(model, "mean") and hasattr(model, "std"):
        return (x - model.mean) / model.std
    return x


def filter_counts(net: nn.Module) -> int:
    """Total output filters over the prunable convs."""
    return sum(m.out_channels for m in prunable_convs(net))


def describe_params(params: dict[str, Any]) -> str:
    """Short human label for pruner parameters (for tables)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
