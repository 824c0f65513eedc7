"""HRank: filter pruning by the rank of feature maps (Lin et al., CVPR 2020)."""

from torch import nn

from harness import FilterPruner, PruneContext, register_pruner
from harness.pruning import GroupImportance
from harness.pruning.criteria import ActivationStatImportance, feature_map_rank


@register_pruner("hrank", paper="Lin et al., HRank: Filter Pruning using High-Rank Feature Map, CVPR 2020")
class HRank(FilterPruner):
    """Removes the filters whose activated feature maps have the lowest average matrix rank (Lin et al. 2020)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = False, images: int = 256) -> None:
        super().__init__(schedule, steps, global_ranking)
        self.images = images

    def importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance:
        """Mean rank of relu(feature map) over up to `images` calibration images."""
        return ActivationStatImportance(feature_map_rank, "hrank", self.images)
