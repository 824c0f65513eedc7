"""The unpruned model: every grid's baseline."""

from torch import nn

from harness import PruneContext, Pruner, register_pruner


@register_pruner("none", paper="")
class NoPruning(Pruner):
    """Dense baseline: the trained model, unchanged."""

    family = "none"

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
        """Return the model as it is."""
        return model
