"""The fine-tuning budget of a pruning schedule: how many epochs follow each cut."""

from __future__ import annotations

from harness.api.errors import PruningError


def finetune_epochs(total: int, steps: int) -> list[int]:
    """Epochs of fine-tuning after each of `steps` cuts, summing to `total`; the last cut always gets some.

    One-shot pruning (steps = 1) fine-tunes `total` epochs after its cut. An iterative schedule splits the same
    total as evenly as it divides, giving the remainder to the later cuts, so the final (deepest) cut is never
    left without fine-tuning and every schedule trains for exactly the one-shot budget.
    """
    if steps < 1:
        raise PruningError(f"a pruning schedule needs at least 1 step, got {steps}.")
    if total < 0:
        raise PruningError(f"finetune.epochs must be >= 0, got {total}.")
    base, extra = divmod(total, steps)
    return [base + (1 if i >= steps - extra else 0) for i in range(steps)]
