"""Random filter pruning: the baseline every criterion must beat."""

from torch import nn

from harness import FilterPruner, PruneContext, register_pruner
from harness.pruning import GroupImportance, RandomImportance


@register_pruner("random_filter", paper="Random channel pruning baseline (e.g. Liu et al., ICLR 2019)")
class RandomFilter(FilterPruner):
    """Removes filters uniformly at random (seeded by the job's seed)."""

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """Random scores, reproducible for a given seed."""
        return RandomImportance()
