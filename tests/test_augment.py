"""Training augmentation: every output is a crop of the zero-padded input, flipped or not, reproducibly."""

from __future__ import annotations

import torch

from harness.training.augment import augment_batch


def _is_crop(out: torch.Tensor, x: torch.Tensor, pad: int, flips: bool) -> bool:
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            if torch.equal(out, crop) or (flips and torch.equal(out, crop.flip(2))):
                return True
    return False


def test_augment_batch_crops_and_flips() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, gen, pad=2, flip=True)
    assert out.shape == x.shape
    assert all(_is_crop(out[i], x[i], 2, flips=True) for i in range(len(x)))
    # Random, not the identity: some images move, some are mirrored.
    assert sum(not torch.equal(out[i], x[i]) for i in range(len(x))) > 32
    assert sum(_is_crop(out[i], x[i].flip(2), 2, flips=False) and not _is_crop(out[i], x[i], 2, flips=False) for i in range(len(x))) > 8


def test_augment_batch_without_flip_never_mirrors() -> None:
    x = torch.rand(64, 1, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(1), pad=2, flip=False)
    assert all(_is_crop(out[i], x[i], 2, flips=False) for i in range(len(x)))


def test_augment_batch_is_reproducible() -> None:
    x = torch.rand(16, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(5))
    b = augment_batch(x, torch.Generator().manual_seed(5))
    c = augment_batch(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
