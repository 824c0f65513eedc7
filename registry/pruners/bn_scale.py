"""Network slimming's channel criterion (Liu et al., ICCV 2017)."""

from torch import nn

from harness import FilterPruner, PruneContext, register_pruner
from harness.pruning import GroupImportance
from harness.pruning.criteria import BNScaleImportance


@register_pruner("bn_scale", paper="Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017")
class BNScale(FilterPruner):
    """Removes the channels with the smallest BatchNorm scale |gamma|, ranked globally as in the paper."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True) -> None:
        super().__init__(schedule, steps, global_ranking)

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """|gamma| of the BatchNorm after each conv."""
        return BNScaleImportance()
