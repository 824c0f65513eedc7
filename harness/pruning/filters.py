"""Filter pruning: criteria score the channels of torch-pruning groups, the lowest are removed in every coupled layer."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import torch
import torch_pruning as tp
from torch import Tensor, nn

from harness.api.errors import PruningError
from harness.api.nets import inner, net_input
from harness.api.pruner import (
    PruneContext,
    Pruner,
    check_sparsity_range,
    filter_counts,
    is_depthwise,
)
from harness.pruning.ranking import lowest, lowest_first

# ---- torch-pruning groups: one "channel" of a group is removed from every coupled layer at once ----


class GroupImportance:
    """Scores the channels of torch-pruning groups; data-driven criteria observe the model in `prepare` first."""

    def prepare(self, model: nn.Module, ctx: PruneContext, groups: list[Any]) -> None:
        """Called before each pruning step with the current model and its prunable groups."""

    def __call__(self, group: Any) -> Tensor:
        """One score per channel of the group's root layer (lower = pruned first)."""
        raise NotImplementedError


def is_out_item(item: Any) -> bool:
    """Whether a group item removes output channels of its layer (as opposed to input channels)."""
    return getattr(item.dep.handler, "__name__", "") == "prune_out_channels"


def group_items(group: Any, kind: type[nn.Module] | tuple[type[nn.Module], ...]) -> Iterator[tuple[nn.Module, list[int], list[int]]]:
    """(layer, its channel indices, the matching root indices) for each `kind` layer whose outputs the group removes."""
    seen: set[int] = set()
    for item in group:
        layer = item.dep.target.module
        if isinstance(layer, kind) and is_out_item(item) and id(layer) not in seen:
            seen.add(id(layer))
            yield layer, [int(i) for i in item.idxs], [int(i) for i in item.root_idxs]


def group_size(group: Any) -> int:
    """Number of channels of the group's root layer."""
    return len(group[0].idxs)


def filters_per_channel(group: Any) -> int:
    """Prunable conv filters removed with one channel of the group (the group's weight in filter sparsity)."""
    return sum(1 for layer, _, _ in group_items(group, nn.Conv2d) if not is_depthwise(layer))


def scatter_to_root(group: Any, per_layer: Callable[[nn.Module, list[int]], Tensor | None], kind: type[nn.Module] | tuple[type[nn.Module], ...]) -> Tensor | None:
    """Sum a per-layer, per-channel score over the group's `kind` layers, indexed by root channel."""
    total: Tensor | None = None
    for layer, idxs, root in group_items(group, kind):
        s = per_layer(layer, idxs)
        if s is None:
            continue
        s = s.detach().float().flatten().cpu()
        if total is None:
            total = torch.zeros(group_size(group))
        total.scatter_add_(0, torch.as_tensor(root), s)
    return total


def representative_layers(group: Any) -> tuple[type[nn.Module], ...]:
    """Where a group's channels are observed: its BatchNorms when it has any (post-BN features), else its convs."""
    has_bn = any(True for _ in group_items(group, nn.BatchNorm2d))
    return (nn.BatchNorm2d,) if has_bn else (nn.Conv2d,)


class FilterPruner(Pruner):
    """Removes whole conv filters ranked by `importance`; torch-pruning keeps coupled layers consistent."""

    family: ClassVar[str] = "filter"

    @abstractmethod
    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """The criterion that scores each channel of a torch-pruning group (lower = pruned first)."""

    def ignored_layers(self, net: nn.Module) -> list[nn.Module]:
        """Layers whose outputs are never pruned: every Linear (the classifier and its inputs stay whole)."""
        return [m for m in net.modules() if isinstance(m, nn.Linear)]

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
        """Remove `sparsity` of the prunable filters, in one or several steps, ranked locally or globally."""
        check_sparsity_range(sparsity, "filter")
        if sparsity == 0.0:
            return model
        net = inner(model)
        example = net_input(model, ctx.example_inputs[:1])
        importance: GroupImportance | None = None  # built only when something is scored (not on a memo hit)
        initial: dict[nn.Module, int] = {}  # root layer -> channels before pruning (group quotas use it)
        total_filters = filter_counts(net)
        for step, target in enumerate(self.step_targets(sparsity)):
            # torch-pruning traces the graph through autograd and gives pruned layers new Parameters: a frozen
            # network would trace empty and prune nothing, so every parameter is trainable here and restored after.
            with _all_trainable(net):
                torch.manual_seed(ctx.seed + step)
                graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
                groups = [g for g in graph.get_all_groups(ignored_layers=self.ignored_layers(net), root_module_types=[nn.Conv2d, nn.Linear]) if filters_per_channel(g) > 0]
                for g in groups:
                    initial.setdefault(g[0].dep.target.module, group_size(g))
                model.eval()
                # The first step scores the dense model itself: the same for every sparsity a MACs match tries.
                memo_key = f"{type(self).__qualname__}/scores/step0"
                cached = ctx.memo.get(memo_key) if step == 0 else None
                if cached is not None and len(cached) == len(groups):
                    scores = [_checked(s, g, type(self).__name__) for s, g in zip(cached, groups)]
                else:
                    importance = importance or self.importance(model, ctx)
                    importance.prepare(model, ctx, groups)
                    scores = [_checked(importance(g), g, type(self).__name__) for g in groups]
                    if step == 0:
                        ctx.memo[memo_key] = scores
                if self.global_ranking:
                    plan = _global_plan(groups, scores, round(target * total_filters) - (total_filters - filter_counts(net)))
                else:
                    plan = _local_plan(groups, scores, initial, target)
                for g, idxs in plan:
                    if idxs:
                        root = g[0].dep.target.module
                        graph.get_pruning_group(root, g[0].dep.handler, sorted(idxs)).prune()
            if ctx.fine_tune is not None and step < self.steps - 1:
                ctx.fine_tune(model, step)
        return model


@contextmanager
def _all_trainable(net: nn.Module) -> Iterator[None]:
    """Every parameter of `net` requires grad inside; those frozen before, looked up by name, are frozen again after."""
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    net.requires_grad_(True)
    try:
        yield
    finally:
        for name, p in net.named_parameters():
            if name in frozen:
                p.requires_grad_(False)


def _checked(scores: Tensor | None, group: Any, who: str) -> Tensor:
    """The group's scores as a float CPU vector of the right length, or a clear error."""
    n = group_size(group)
    if scores is None or scores.numel() != n:
        raise PruningError(f"{who} scored {None if scores is None else scores.numel()} channels of a {n}-channel group; a criterion must score each channel once.")
    return scores.detach().float().flatten().cpu()


def _local_plan(groups: list[Any], scores: list[Tensor], initial: dict[nn.Module, int], target: float) -> list[tuple[Any, list[int]]]:
    """Per group: remove channels until round(target x its initial width) are gone, keeping at least one."""
    plan = []
    for g, s in zip(groups, scores):
        n0 = initial[g[0].dep.target.module]
        removed = n0 - group_size(g)
        k = min(math.floor(target * n0 + 0.5) - removed, group_size(g) - 1)
        plan.append((g, lowest(s, k)))
    return plan


def _global_plan(groups: list[Any], scores: list[Tensor], filters_to_remove: int) -> list[tuple[Any, list[int]]]:
    """Across groups: remove the lowest-scored channels until enough filters are gone, each group keeping one."""
    if not scores:
        return []
    owner = [(gi, i) for gi, s in enumerate(scores) for i in range(len(s))]
    chosen: list[list[int]] = [[] for _ in groups]
    removed = 0
    for pos in lowest_first(torch.cat(scores)).tolist():  # ties: lower group, then lower channel first
        gi, i = owner[pos]
        if removed >= filters_to_remove:
            break
        if len(chosen[gi]) >= group_size(groups[gi]) - 1:
            continue
        weight = filters_per_channel(groups[gi])
        # Stop rather than overshoot by more than half a channel's worth of filters.
        if removed + weight - filters_to_remove > weight / 2:
            continue
        chosen[gi].append(i)
        removed += weight
    return list(zip(groups, chosen))


class FilterScoreImportance(GroupImportance):
    """Scores each channel by a per-filter function of the conv weights that output it, summed over the group."""

    def __init__(self, score: Callable[[Tensor], Tensor]) -> None:
        self.score = score

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor:
        """One score per channel of the group's root, summed over every non-depthwise conv whose filters it removes."""
        def per_layer(layer: nn.Module, idxs: list[int]) -> Tensor | None:
            if is_depthwise(layer):
                return None
            return self.score(cast(Tensor, layer.weight).detach()[idxs])

        total = scatter_to_root(group, per_layer, nn.Conv2d)
        return total if total is not None else torch.zeros(group_size(group))


class RandomImportance(GroupImportance):
    """Uniform random scores from torch's generator, which `FilterPruner.prune` seeds with (seed, step)."""

    def __call__(self, group: Any) -> Tensor:
        """A fresh uniform score per channel."""
        return torch.rand(group_size(group))


class ScoredFilterPruner(FilterPruner):
    """A filter pruner defined by one scoring function over a conv's filters: the minimal plugin."""

    @abstractmethod
    def score(self, weight: Tensor) -> Tensor:
        """One importance per filter of `weight` (out, in, kh, kw); lower scores are pruned first."""

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """Wraps `score` as a group importance."""
        return FilterScoreImportance(self.score)
