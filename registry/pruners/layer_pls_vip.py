"""Discriminative layer pruning (Jordao, Lie & Schwartz, IEEE JSTSP 2020)."""

from torch import Tensor, nn

from harness import PruneContext, register_pruner
from harness.pruning.layers import Block, LayerPruner, block_pls_vip


@register_pruner("layer_pls_vip", paper="Jordao et al., Discriminative Layer Pruning for Convolutional Neural Networks, IEEE JSTSP 2020")
class LayerPLSVIP(LayerPruner):
    """Removes the residual blocks whose outputs matter least to the labels in a PLS projection (mean VIP)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True, components: int = 2, images: int | None = None) -> None:
        super().__init__(schedule, steps, global_ranking)
        self.components, self.images = components, images

    def block_scores(self, model: nn.Module, blocks: list[Block], ctx: PruneContext) -> Tensor:
        """Mean VIP of each block's globally max-pooled output channels."""
        return block_pls_vip(model, blocks, ctx, self.components, self.images)
