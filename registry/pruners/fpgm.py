"""Filter pruning via geometric median (He et al., CVPR 2019)."""

from torch import Tensor

from harness import register_pruner
from harness.pruning import ScoredFilterPruner
from harness.pruning.criteria import distance_to_others


@register_pruner("fpgm", paper="He et al., Filter Pruning via Geometric Median for Deep CNN Acceleration, CVPR 2019")
class FPGM(ScoredFilterPruner):
    """Removes the filters nearest the layer's geometric median: the most replaceable ones (He et al. 2019)."""

    def score(self, weight: Tensor) -> Tensor:
        """Sum of Euclidean distances to the layer's other filters (smallest = nearest the median)."""
        return distance_to_others(weight)
