"""Driver-side stand-ins for plugins that only worker processes may import (submissions)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from harness.api.errors import HarnessError
from harness.api.plugins import pruners
from harness.api.pruner import PruneContext, Pruner


def register_stubs(stubs: dict[str, dict[str, Any]]) -> list[str]:
    """Register a placeholder Pruner per name so grids validate and the site can describe it; returns the names added."""
    added: list[str] = []
    for name, meta in stubs.items():
        if name in pruners:
            continue
        family = meta.get("family", "filter")

        class Stub(Pruner):
            """Placeholder for a pruner whose code runs in worker processes only."""

            # Bound per class: the loop variable `name` would name the last stub by the time prune() runs.
            submission: ClassVar[str] = name

            def __init__(self, **params: Any) -> None:
                super().__init__(**{k: v for k, v in params.items() if k in ("schedule", "steps", "global_ranking")})

            def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
                raise HarnessError(f"pruner {self.submission!r} is a submission: it runs in worker processes only.")

        Stub.family = family
        Stub.__name__ = Stub.__qualname__ = f"Stub_{name}"
        Stub.__doc__ = meta.get("description") or Stub.__doc__
        extra = {k: v for k, v in meta.items() if k not in ("family", "description", "sha256")}
        if meta.get("sha256"):
            extra["submission_sha256"] = meta["sha256"]
        pruners.register(name, Stub, description=meta.get("description", ""), **extra)
        added.append(name)
    return added


def unregister_stubs(names: list[str]) -> None:
    """Remove the placeholders `register_stubs` added, so one run's submissions do not outlive it in this process."""
    for name in names:
        pruners.unregister(name)
