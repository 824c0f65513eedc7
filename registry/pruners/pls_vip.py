"""Partial least squares + variable importance in projection (Jordao et al. 2018/2020)."""

from torch import nn

from harness import FilterPruner, PruneContext, register_pruner
from harness.pruning import GroupImportance
from harness.pruning.criteria import PLSVIPImportance


@register_pruner("pls_vip", paper="Jordao et al., Pruning Deep Neural Networks using Partial Least Squares, 2018/2020")
class PLSVIP(FilterPruner):
    """Removes the filters least relevant to the labels in a PLS projection of all filters (VIP, global ranking)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True, components: int = 2, images: int | None = None) -> None:
        super().__init__(schedule, steps, global_ranking)
        self.components, self.images = components, images

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """VIP of each filter's globally max-pooled activation, from one PLS model of `components` components."""
        return PLSVIPImportance(self.components, self.images)
