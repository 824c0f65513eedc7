"""The pruner plugin contract: the base class, what a pruner may use, and how filter sparsity is counted."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.api.errors import PruningError
from harness.api.nets import inner


@dataclass
class PruneContext:
    """What a pruner may use besides the model: example input, calibration data, seed, a fine-tune hook."""

    example_inputs: Tensor  # one batch of [0, 1] pixels on the model's device
    calibration: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # a few training batches
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Called between the steps of an iterative schedule: fine_tune(model, step_index).
    fine_tune: Callable[[nn.Module, int], None] | None = None
    # Shared by every prune() of one job on copies of the same dense model (match = "macs" bisects over many):
    # a pruner may keep there what depends only on that model, e.g. its first step's scores.
    memo: dict[str, Any] = field(default_factory=dict)


class Pruner(ABC):
    """Turns a trained model into a pruned one at a requested sparsity."""

    family: ClassVar[str] = "filter"  # none | filter | layer | unstructured
    structured: ClassVar[bool] = True

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = False) -> None:
        if schedule not in ("oneshot", "iterative"):
            raise PruningError(f"schedule must be 'oneshot' or 'iterative', got {schedule!r}")
        if not isinstance(steps, int) or steps < 1:
            raise PruningError(f"steps must be an integer >= 1, got {steps!r}")
        self.schedule = schedule
        self.steps = steps if schedule == "iterative" else 1
        self.global_ranking = bool(global_ranking)

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

    def step_targets(self, sparsity: float) -> list[float]:
        """Cumulative sparsity after each step of the schedule (linear, ending at the request)."""
        return [sparsity * (i + 1) / self.steps for i in range(self.steps)]


def check_sparsity_range(sparsity: float, unit: str) -> None:
    """Reject a sparsity outside [0, 1) with a message naming the unit it counts."""
    if not 0.0 <= sparsity < 1.0:
        raise PruningError(f"{unit} sparsity must be in [0, 1), got {sparsity}; use e.g. 0.3 or 0.6.")


def prunable_convs(net: nn.Module) -> list[nn.Conv2d]:
    """Conv layers whose output filters count toward filter sparsity (depthwise convs follow their input)."""
    return [m for m in net.modules() if isinstance(m, nn.Conv2d) and not is_depthwise(m)]


def is_depthwise(m: nn.Module) -> bool:
    """A conv with one filter per input channel (its filters are removed with its input channels)."""
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def filter_counts(net: nn.Module) -> int:
    """Total output filters over the prunable convs."""
    return sum(m.out_channels for m in prunable_convs(net))
