"""L1-norm filter pruning (Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017)."""

from torch import Tensor

from harness import register_pruner
from harness.pruning import ScoredFilterPruner
from harness.pruning.criteria import l1_norm


@register_pruner("l1_filter", paper="Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017")
class L1Filter(ScoredFilterPruner):
    """Removes the filters with the smallest sum of absolute kernel weights (Li et al. 2017)."""

    def score(self, weight: Tensor) -> Tensor:
        """Sum of |w| over each filter's kernel."""
        return l1_norm(weight)
