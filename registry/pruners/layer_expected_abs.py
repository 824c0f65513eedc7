"""Residual-block removal by expected absolute activation (DropNet, Tan & Motani 2020, at block level)."""

from torch import Tensor, nn

from harness import PruneContext, register_pruner
from harness.pruning.layers import Block, LayerPruner, block_expected_abs


@register_pruner("layer_expected_abs", paper="Tan & Motani, DropNet, ICML 2020 (block level, as in Jordao's DeepPruning)")
class LayerExpectedAbs(LayerPruner):
    """Removes the residual blocks with the lowest mean |activation| of their output."""

    def __init__(self, schedule: str = "oneshot", steps: int = 1, global_ranking: bool = True, images: int | None = None) -> None:
        super().__init__(schedule, steps, global_ranking)
        self.images = images

    def block_scores(self, model: nn.Module, blocks: list[Block], ctx: PruneContext) -> Tensor:
        """Mean |relu(block output)| over calibration images."""
        return block_expected_abs(model, blocks, ctx, self.images)
