"""First-order Taylor channel importance (Molchanov et al., CVPR 2019)."""

from torch import nn

from harness import FilterPruner, PruneContext, register_pruner
from harness.pruning import GroupImportance
from harness.pruning.criteria import TaylorImportance


@register_pruner("taylor", paper="Molchanov et al., Importance Estimation for Neural Network Pruning, CVPR 2019")
class Taylor(FilterPruner):
    """Removes the channels whose removal changes the loss least, by first-order Taylor on BN gates (global)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True) -> None:
        super().__init__(schedule, steps, global_ranking)

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """(gamma*dL/dgamma + beta*dL/dbeta)^2 averaged over calibration minibatches."""
        return TaylorImportance()
