"""Which units a pruner removes first: scores ranked lowest to highest, ties broken by position."""

from __future__ import annotations

import torch
from torch import Tensor


def lowest_first(scores: Tensor) -> Tensor:
    """Positions of the flattened `scores` from lowest to highest score; equal scores keep position order, NaN last.

    The tie-break makes every pruner's choice deterministic (constant scores, dead channels, zeroed weights).
    """
    return torch.argsort(scores.detach().flatten(), stable=True)


def lowest(scores: Tensor, k: int) -> list[int]:
    """Positions of the k lowest scores (none when k <= 0), in `lowest_first` order."""
    if k <= 0:
        return []
    return lowest_first(scores)[:k].tolist()


def mask_lowest(scores: Tensor, k: int) -> Tensor:
    """A 0/1 mask of `scores`' shape keeping all but the k lowest (exactly k zeroed, by `lowest_first`)."""
    flat = scores.flatten()
    mask = torch.ones_like(flat)
    if k > 0:
        mask[lowest_first(flat)[:k]] = 0
    return mask.view_as(scores)
