"""Random residual-block removal: the baseline for layer pruning."""

import torch
from torch import Tensor, nn

from harness import PruneContext, register_pruner
from harness.pruning.layers import Block, LayerPruner


@register_pruner("layer_random", paper="Random layer pruning baseline (e.g. Jordao et al., JSTSP 2020)")
class LayerRandom(LayerPruner):
    """Removes residual blocks uniformly at random (seeded by the job's seed)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True) -> None:
        super().__init__(schedule, steps, global_ranking)

    def block_scores(self, model: nn.Module, blocks: list[Block], ctx: PruneContext) -> Tensor:
        """Uniform random scores from torch's generator, which prune() seeds with (seed, step)."""
        return torch.rand(len(blocks))
