"""Layer pruning: remove whole residual blocks (those with an identity shortcut), the network still runs."""

from __future__ import annotations

import math
import operator
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.errors import PruningError
from harness.api.nets import inner
from harness.api.pruner import PruneContext, Pruner, check_sparsity_range
from harness.pruning.criteria import (
    calibration_images,
    global_max,
    layer_features,
    mean_abs,
    vip_scores,
)
from harness.pruning.ranking import lowest_first

_ADDS = {operator.add, operator.iadd, torch.add}


@dataclass(frozen=True)
class Block:
    """A removable residual block: `parent[index]`, with `stage` naming its parent for local ranking."""

    parent: nn.Sequential
    index: int
    stage: str

    @property
    def module(self) -> nn.Module:
        """The block itself."""
        return self.parent[self.index]


def _identity_of_input(node: torch.fx.Node, gm: torch.fx.GraphModule) -> bool:
    """Whether `node` is the block's input, possibly passed through nn.Identity modules."""
    while node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), nn.Identity):
        node = node.args[0]  # type: ignore[assignment]
    return node.op == "placeholder"


def _layout(block: nn.Module) -> tuple[Any, ...]:
    """What a block's traced graph depends on: its class, its children's names and types, its flag attributes."""
    children = tuple((n, type(m).__name__) for n, m in block.named_children())
    flags = tuple(sorted((k, v) for k, v in vars(block).items() if not k.startswith("_") and isinstance(v, (bool, int, str, type(None)))))
    return (type(block), children, flags)


_SHORTCUT_CACHE: dict[tuple[Any, ...], bool] = {}


def has_identity_shortcut(block: nn.Module) -> bool:
    """Whether the block adds its own input to its output (x + f(x)): removing it leaves a working network."""
    key = _layout(block)
    if key not in _SHORTCUT_CACHE:  # tracing is slow; blocks of one layout trace alike
        _SHORTCUT_CACHE[key] = _traced_identity_shortcut(block)
    return _SHORTCUT_CACHE[key]


def _traced_identity_shortcut(block: nn.Module) -> bool:
    """Trace the block: does its output come from an add of its own input, through one-input ops only (e.g. a ReLU)?"""
    try:
        gm = torch.fx.symbolic_trace(block)
    except Exception:  # untraceable blocks (data-dependent control flow) are not removable
        return False
    # The add must make the output: a stage of blocks also adds its input (in its first block), but its output is
    # the last block's, and removing the stage would remove every block in it.
    node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    while isinstance(node, torch.fx.Node):
        if _is_add(node):
            args = [a for a in node.args if isinstance(a, torch.fx.Node)]
            return len(args) == 2 and any(_identity_of_input(a, gm) for a in args)
        if len(node.all_input_nodes) != 1:
            return False
        node = node.all_input_nodes[0]
    return False


def _is_add(node: torch.fx.Node) -> bool:
    """Whether the traced op is a tensor addition."""
    return (node.op == "call_function" and node.target in _ADDS) or (node.op == "call_method" and node.target in ("add", "add_"))


def removable_blocks(net: nn.Module) -> list[Block]:
    """Blocks inside nn.Sequential containers that contain a conv and add their own input to their output.

    An identity shortcut implies the block keeps its input's shape, so nn.Identity can stand in for it.
    """
    names = {id(m): n for n, m in net.named_modules()}
    found: list[Block] = []
    for parent in net.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        for i, child in enumerate(parent):
            if any(isinstance(m, nn.Conv2d) for m in child.modules()) and has_identity_shortcut(child):
                found.append(Block(parent, i, names.get(id(parent), "")))
    # A Sequential that wraps a single block is a block too: keep the innermost, so no block is counted twice.
    inner = {id(b.module) for b in found}
    return [b for b in found if not any(id(m) in inner for m in list(b.module.modules())[1:])]


def require_blocks(net: nn.Module, blocks: list[Block]) -> None:
    """Fail clearly on a network with nothing to remove."""
    if not blocks:
        raise PruningError(
            f"layer pruning removes residual blocks with an identity shortcut, and {type(net).__name__} has none; "
            "use a filter pruner (e.g. l1_filter) for it."
        )


def _apportion(k: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split k removals across stages in proportion to their sizes (largest remainder), each keeping one block."""
    total = sum(sizes.values())
    exact = {s: k * n / total for s, n in sizes.items()}
    quota = {s: min(math.floor(e), sizes[s] - 1) for s, e in exact.items()}
    for s in sorted(sizes, key=lambda s: (-(exact[s] - math.floor(exact[s])), s)):
        if sum(quota.values()) >= k:
            break
        if quota[s] < sizes[s] - 1:
            quota[s] += 1
    return quota


class LayerPruner(Pruner):
    """Removes the lowest-scored residual blocks; sparsity = fraction of removable blocks removed."""

    family: ClassVar[str] = "layer"

    @abstractmethod
    def block_scores(self, model: nn.Module, blocks: list[Block], ctx: PruneContext) -> Tensor:
        """One importance per block of the current model (lower = removed first)."""

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
        """Replace round(sparsity x removable) blocks by nn.Identity, in one or several steps."""
        check_sparsity_range(sparsity, "layer")
        if sparsity == 0.0:
            return model
        net = inner(model)
        initial = removable_blocks(net)
        require_blocks(net, initial)
        goal = math.floor(sparsity * len(initial) + 0.5)
        if goal == 0:
            raise PruningError(
                f"sparsity {sparsity} removes no block of the {len(initial)} removable in {type(net).__name__}; "
                f"request at least {0.5 / len(initial):.3f}."
            )
        stage_sizes: dict[str, int] = {}
        for b in initial:
            stage_sizes[b.stage] = stage_sizes.get(b.stage, 0) + 1
        for step, target in enumerate(self.step_targets(sparsity)):
            torch.manual_seed(ctx.seed + step)
            model.eval()
            blocks = removable_blocks(net)
            k = math.floor(target * len(initial) + 0.5) - (len(initial) - len(blocks))
            if k > 0:
                scores = self.block_scores(model, blocks, ctx).detach().float().cpu()
                for b in self._select(blocks, scores, k, stage_sizes):
                    b.parent[b.index] = nn.Identity()
            if ctx.fine_tune is not None and step < self.steps - 1:
                ctx.fine_tune(model, step)
        return model

    def _select(self, blocks: list[Block], scores: Tensor, k: int, stage_sizes: dict[str, int]) -> list[Block]:
        """The k blocks to remove: lowest scores overall (global) or per stage in proportion (local)."""
        order = lowest_first(scores).tolist()
        if self.global_ranking:
            return [blocks[i] for i in order[:k]]
        removed_so_far = {s: n - sum(1 for b in blocks if b.stage == s) for s, n in stage_sizes.items()}
        quota = _apportion(k + sum(removed_so_far.values()), stage_sizes)
        left = {s: quota[s] - removed_so_far[s] for s in stage_sizes}
        chosen = []
        for i in order:
            if left.get(blocks[i].stage, 0) > 0:
                chosen.append(blocks[i])
                left[blocks[i].stage] -= 1
        return chosen

    def achieved_sparsity(self, dense: nn.Module, pruned: nn.Module) -> float:
        """Fraction of the dense model's removable blocks that are gone."""
        before, after = _count_blocks(dense), _count_blocks(pruned)
        return 1.0 - after / before if before else 0.0

    def tolerance(self, dense: nn.Module) -> float:
        """Half a block of rounding."""
        n = _count_blocks(dense)
        return 0.5 / n if n else 0.0


def _count_blocks(model: nn.Module) -> int:
    """Removable blocks in a model."""
    return len(removable_blocks(inner(model)))


# ---- block criteria ----


def block_weight_l1(blocks: list[Block]) -> Tensor:
    """Mean |w| over each block's conv weights (an L1 norm per weight, so wide and narrow blocks compare)."""
    out = []
    for b in blocks:
        ws = [m.weight.detach().abs().flatten() for m in b.module.modules() if isinstance(m, nn.Conv2d)]
        out.append(torch.cat(ws).mean())
    return torch.stack(out)


def block_outputs(model: nn.Module, blocks: list[Block], x: Tensor, feature: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """Per block, `feature(relu(block output))` for every image: (images, channels)."""
    feats = layer_features(model, [b.module for b in blocks], x, feature)
    return [feats[b.module] for b in blocks]


def block_expected_abs(model: nn.Module, blocks: list[Block], ctx: PruneContext, images: int | None = None) -> Tensor:
    """Mean |relu(block output)| over calibration images (DropNet's criterion at block level)."""
    x, _ = calibration_images(ctx, "layer_expected_abs", images)
    return torch.stack([f.mean() for f in block_outputs(model, blocks, x, mean_abs)])


@torch.no_grad()
def block_kl(model: nn.Module, blocks: list[Block], ctx: PruneContext, images: int = 64) -> Tensor:
    """KL(q || p) between the output with the block skipped (q) and the intact output (p)."""
    x, _ = calibration_images(ctx, "layer_kl_divergence", images)
    model.eval()
    log_p = F.log_softmax(model(x), 1)
    scores = []
    for b in blocks:
        original = b.parent[b.index]
        b.parent[b.index] = nn.Identity()
        try:
            log_q = F.log_softmax(model(x), 1)
        finally:
            b.parent[b.index] = original
        scores.append((log_q.exp() * (log_q - log_p)).sum(1).mean())
    return torch.stack(scores)


def block_pls_vip(model: nn.Module, blocks: list[Block], ctx: PruneContext, components: int = 2, images: int | None = None) -> Tensor:
    """Mean VIP of each block's max-pooled output channels in one PLS model over all blocks."""
    x, y = calibration_images(ctx, "layer_pls_vip", images)
    feats = block_outputs(model, blocks, x, global_max)
    vip = torch.from_numpy(vip_scores(torch.cat(feats, 1).numpy(), y.cpu().numpy(), components)).float()
    scores, start = [], 0
    for f in feats:
        scores.append(vip[start : start + f.shape[1]].mean())
        start += f.shape[1]
    return torch.stack(scores)
