"""The fine-tuned dense control: the trained model, unpruned, fine-tuned with exactly the pruned rows' budget."""

from torch import nn

from harness import PruneContext, Pruner, register_pruner


@register_pruner("dense_finetuned", paper="")
class DenseFinetuned(Pruner):
    """Control: prunes nothing, then gets the same fine-tuning as every pruned row, isolating the effect of pruning."""

    family = "control"

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
        """Return the model as it is (the pipeline fine-tunes it afterwards)."""
        return model

    def achieved_sparsity(self, dense: nn.Module, pruned: nn.Module) -> float:
        """Nothing is removed."""
        return 0.0

    def tolerance(self, dense: nn.Module) -> float:
        """No rounding: the control must equal the dense architecture."""
        return 0.0
