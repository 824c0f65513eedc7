"""Residual-block removal by output KL divergence (Luo & Wu, CVPR 2020, at block level)."""

from torch import Tensor, nn

from harness import PruneContext, register_pruner
from harness.pruning.layers import Block, LayerPruner, block_kl


@register_pruner("layer_kl_divergence", paper="Luo & Wu, CVPR 2020 criterion applied to blocks (as in Jordao's DeepPruning)")
class LayerKLDivergence(LayerPruner):
    """Removes the residual blocks whose skipping changes the output distribution least (KL)."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True, images: int = 64) -> None:
        super().__init__(schedule, steps, global_ranking)
        self.images = images

    def block_scores(self, model: nn.Module, blocks: list[Block], ctx: PruneContext) -> Tensor:
        """KL(skipped || intact) softmax over calibration images, one block at a time."""
        return block_kl(model, blocks, ctx, self.images)
