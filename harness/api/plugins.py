"""The four registries and the public decorators that built-ins and users register with."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from harness.api.attack import Attack
from harness.api.data import ImageData
from harness.api.pruner import Pruner
from harness.api.registry import Registry

# An architecture builds a network for (num_classes, in_channels); a dataset loads ImageData from a folder.
ArchitectureFn = Callable[..., nn.Module]
DatasetFn = Callable[..., ImageData]

pruners: Registry[type[Pruner]] = Registry("pruner", Pruner)
attacks: Registry[type[Attack]] = Registry("attack", Attack)
architectures: Registry[ArchitectureFn] = Registry("architecture")
datasets: Registry[DatasetFn] = Registry("dataset")

REGISTRIES: dict[str, Registry] = {
    "pruners": pruners,
    "attacks": attacks,
    "architectures": architectures,
    "datasets": datasets,
}

register_pruner = pruners.decorator
register_attack = attacks.decorator
register_architecture = architectures.decorator
register_dataset = datasets.decorator
