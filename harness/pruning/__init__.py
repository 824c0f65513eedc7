"""Pruning algorithms: filter pruning with its criteria, layer (block) pruning, unstructured magnitude pruning.

The names a pruner's author imports are re-exported here (`from harness.pruning import ScoredFilterPruner`).
"""

from harness.api.pruner import PruneContext, Pruner
from harness.pruning.filters import (
    FilterPruner,
    GroupImportance,
    RandomImportance,
    ScoredFilterPruner,
)
from harness.pruning.layers import LayerPruner
from harness.pruning.unstructured import UnstructuredPruner

__all__ = [
    "FilterPruner",
    "GroupImportance",
    "LayerPruner",
    "PruneContext",
    "Pruner",
    "RandomImportance",
    "ScoredFilterPruner",
    "UnstructuredPruner",
]
