"""Training-time augmentation, batched on the batch's device."""

from __future__ import annotations

import torch
from torch import Tensor


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """Random crop after zero padding and random horizontal flip, batched (standard CIFAR augmentation)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None]).view(n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None]).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    out = padded[batch, chans, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(3), out)
    return out
