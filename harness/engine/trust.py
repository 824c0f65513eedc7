"""Whose code measures a pruned model: the harness's, never a method a submitted file could override."""

from __future__ import annotations

from harness.api.pruner import Pruner


def trusted_class(cls: type) -> type[Pruner]:
    """The nearest class in the MRO that ships with the harness: its sparsity measure is the one believed."""
    return next(c for c in cls.__mro__ if c.__module__.split(".")[0] in ("harness", "registry") and issubclass(c, Pruner))
