"""A minimal pruner submission: `harness submit my_pruner.py` checks it, records it and runs it on the smoke grid.

The whole contract:
- one class registered with `@register_pruner("a_new_snake_case_name", author=..., paper=...)`;
- its docstring's first line is the description shown on the leaderboard;
- subclass `ScoredFilterPruner` and implement `score`: one number per filter of a conv layer, lower = pruned first.
  The harness does the surgery (torch-pruning keeps coupled layers consistent), reaches the requested sparsity,
  fine-tunes, attacks and records the results. Override `prune` only for something a score cannot express.
- randomness only from the pruning seed (ScoredFilterPruner seeds torch for you before scoring);
- import only torch, numpy and the harness (the workers have nothing else installed).
"""

from torch import Tensor

from harness import register_pruner
from harness.pruning import ScoredFilterPruner


@register_pruner(
    "l1_over_l2_filter",
    author="Your Name",
    paper="",  # e.g. "Author et al., Title, Venue Year" when the criterion is published
    url="",  # optional https:// link to code or paper
)
class L1OverL2Filter(ScoredFilterPruner):
    """Removes the filters whose weights are least spread out: lowest ratio of L1 to L2 norm."""

    def score(self, weight: Tensor) -> Tensor:
        """Per filter of `weight` (out, in, kh, kw): sum |w| / sqrt(sum w^2), one number per output filter."""
        flat = weight.flatten(1)
        return flat.abs().sum(1) / flat.norm(dim=1).clamp_min(1e-12)
