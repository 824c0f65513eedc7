"""harness: measure how pruning a CNN changes its robustness to adversarial images."""

from harness.api.attack import Attack
from harness.api.data import ImageData
from harness.api.errors import HarnessError
from harness.api.nets import Normalized
from harness.api.plugins import (
    register_architecture,
    register_attack,
    register_dataset,
    register_pruner,
)
from harness.api.pruner import PruneContext, Pruner
from harness.pruning.filters import FilterPruner

__version__ = "0.1.0"

__all__ = [
    "Attack",
    "FilterPruner",
    "HarnessError",
    "ImageData",
    "Normalized",
    "PruneContext",
    "Pruner",
    "register_architecture",
    "register_attack",
    "register_dataset",
    "register_pruner",
]
