"""DropNet's expected-absolute-activation criterion (Tan & Motani, ICML 2020)."""

from torch import nn

from harness import FilterPruner, PruneContext, register_pruner
from harness.pruning import GroupImportance
from harness.pruning.criteria import ActivationStatImportance, mean_abs


@register_pruner("expected_abs", paper="Tan & Motani, DropNet: Reducing Neural Network Complexity via Iterative Pruning, ICML 2020")
class ExpectedAbs(FilterPruner):
    """Removes the filters with the lowest expected absolute post-activation value (DropNet)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = False, images: int = 256) -> None:
        super().__init__(schedule, steps, global_ranking)
        self.images = images

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """Mean |relu(feature map)| over up to `images` calibration images."""
        return ActivationStatImportance(mean_abs, "expected_abs", self.images)
