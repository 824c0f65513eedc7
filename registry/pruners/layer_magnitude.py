"""Layer-wise magnitude pruning (Han et al. 2015 with the same sparsity in every layer)."""

from harness import register_pruner
from harness.pruning.unstructured import UnstructuredPruner


@register_pruner("layer_magnitude", paper="Han et al., NeurIPS 2015, uniform per-layer sparsity (cf. Zhu & Gupta 2017)")
class LayerMagnitude(UnstructuredPruner):
    """Zeroes the smallest-|w| weights of each conv and linear layer, the same fraction in each (unstructured)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = False) -> None:
        super().__init__(schedule, steps, global_ranking)
