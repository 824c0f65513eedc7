"""L2-norm filter pruning (the Euclidean variant of Li et al. 2017, as used by He et al., SFP, IJCAI 2018)."""

from torch import Tensor

from harness import register_pruner
from harness.pruning import ScoredFilterPruner
from harness.pruning.criteria import l2_norm


@register_pruner("l2_filter", paper="He et al., Soft Filter Pruning, IJCAI 2018 (L2 variant of Li et al. 2017)")
class L2Filter(ScoredFilterPruner):
    """Removes the filters with the smallest Euclidean norm of their kernel weights."""

    def score(self, weight: Tensor) -> Tensor:
        """||w||_2 of each filter."""
        return l2_norm(weight)
