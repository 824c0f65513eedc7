"""Channel importance by output KL divergence (Luo & Wu, CVPR 2020)."""

from torch import nn

from harness import FilterPruner, PruneContext, register_pruner
from harness.pruning import GroupImportance
from harness.pruning.criteria import KLImportance


@register_pruner("kl_divergence", paper="Luo & Wu, Neural Network Pruning with Residual-Connections and Limited-Data, CVPR 2020")
class KLDivergence(FilterPruner):
    """Removes the channels whose removal changes the network's output distribution least (KL, Luo & Wu 2020)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = False, images: int = 64) -> None:
        super().__init__(schedule, steps, global_ranking)
        self.images = images

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """KL(pruned || intact) softmax over up to `images` calibration images, one channel at a time."""
        return KLImportance(images=self.images)
