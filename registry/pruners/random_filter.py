"""Random filter pruning: the baseline every criterion must beat."""

import torch_pruning as tp
from torch import nn

from harness import FilterPruner, PruneContext, register_pruner


@register_pruner("random_filter", paper="Random channel pruning baseline (e.g. Liu et al., ICLR 2019)")
class RandomFilter(FilterPruner):
    """Removes filters uniformly at random (seeded by the job's seed)."""

    def importance(self, model: nn.Module, ctx: PruneContext) -> tp.importance.Importance:
        """Random scores from torch's generator, seeded before each pruning run."""
        return tp.importance.RandomImportance()
