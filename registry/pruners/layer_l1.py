"""Residual-block removal by weight magnitude (the L1 criterion of Li et al. 2017 at block level)."""

from torch import Tensor, nn

from harness import PruneContext, register_pruner
from harness.pruning.layers import Block, LayerPruner, block_weight_l1


@register_pruner("layer_l1", paper="Li et al., ICLR 2017 criterion applied to blocks (as in Jordao et al., JSTSP 2020)")
class LayerL1(LayerPruner):
    """Removes the residual blocks with the smallest mean |w| over their conv weights."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True) -> None:
        super().__init__(schedule, steps, global_ranking)

    def block_scores(self, model: nn.Module, blocks: list[Block], ctx: PruneContext) -> Tensor:
        """Mean absolute conv weight of each block."""
        return block_weight_l1(blocks)
