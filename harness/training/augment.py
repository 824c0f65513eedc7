"""Training-time augmentation, batched on the batch's device, with draws made where the generator lives."""

from __future__ import annotations

import torch
from torch import Tensor


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> Tensor:
    """Random crop after zero padding and random horizontal flip, batched (standard CIFAR augmentation).

    Works on uint8 or float images alike (zero padding is 0 in both), as one gather. Every draw is made on
    `generator.device` and then moved to the images' device, so no generator/tensor device pairing can fail.
    """
    n, c, h, w = x.shape
    dev = generator.device
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev).to(x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        mask = (torch.rand(n, generator=generator, device=dev) < 0.5).to(x.device)
        cols = torch.where(mask[:, None], cols.flip(1), cols)  # flipping the crop = reading its columns backwards
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx[:, None] + cols).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return torch.nn.functional.pad(x, (pad, pad, pad, pad))[batch, chans, rows, cols]
