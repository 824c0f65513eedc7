"""harness: measure how pruning a CNN changes its robustness to adversarial images."""

import warnings

# torch-pruning imports timm when it is installed (robustbench brings it), and timm's hrnet module calls the
# deprecated torch.jit.interface at import: a warning about a third-party model on every command, not about ours.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.interface` is deprecated", category=FutureWarning)

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
