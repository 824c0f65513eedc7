"""Global magnitude pruning (Han et al., Learning both Weights and Connections, NeurIPS 2015)."""

from harness import register_pruner
from harness.pruning.unstructured import UnstructuredPruner


@register_pruner("global_magnitude", paper="Han et al., Learning both Weights and Connections for Efficient Neural Networks, NeurIPS 2015")
class GlobalMagnitude(UnstructuredPruner):
    """Zeroes the smallest-|w| conv and linear weights, one threshold across the network (unstructured)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True) -> None:
        super().__init__(schedule, steps, global_ranking)
