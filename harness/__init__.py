"""harness: measure how pruning a CNN changes its robustness to adversarial images."""

from harness.attacks import Attack
from harness.data import ImageData
from harness.errors import HarnessError
from harness.nets import Normalized
from harness.plugins import (
    register_architecture,
    register_attack,
    register_dataset,
    register_pruner,
)
from harness.pruning import FilterPruner, PruneContext, Pruner

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
