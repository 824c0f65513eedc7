"""In-memory image datasets: the shape every dataset plugin returns, and batching over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ImageData:
    """Train and test images (N, C, H, W; uint8 0-255 or float 0-1) with labels and metadata."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Standard attack budgets for this dataset in [0, 1] pixel space.
    eps_linf: float = 8 / 255
    eps_l2: float = 0.5
    # Random crop (with padding) and horizontal flip during training, as for CIFAR.
    augment: bool = False
    flip: bool = True
    source: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Image channels."""
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        """Image height (images are square)."""
        return int(self.x_train.shape[2])

    def describe(self) -> dict[str, object]:
        """Plain-data summary for provenance."""
        return {
            "name": self.name,
            "train": len(self.y_train),
            "test": len(self.y_test),
            "shape": list(self.x_train.shape[1:]),
            "classes": self.num_classes,
            "source": self.source,
        }


def to_float(x: Tensor) -> Tensor:
    """Images as float32 in [0, 1], whatever their stored dtype."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def subset(x: Tensor, y: Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """A class-balanced-in-expectation random subset of `n` examples (all when n is None or too big)."""
    idx = subset_indices(len(y), n, seed)
    return (x, y) if idx is None else (x[idx.to(x.device)], y[idx.to(y.device)])


def subset_indices(total: int, n: int | None, seed: int) -> Tensor | None:
    """The sorted indices `subset` takes (None: all of them), drawn on the CPU so every device picks the same examples."""
    if n is None or n >= total:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g, device=g.device)[:n].sort().values


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    device: torch.device,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Float batches on `device`, optionally shuffled with a seeded generator (drawn on the generator's device)."""
    n = len(y)
    if shuffle:
        order = torch.randperm(n, generator=generator, device=generator.device if generator is not None else x.device)
    else:
        order = torch.arange(n)
    order = order.to(x.device)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield to_float(x[idx]).to(device, non_blocking=True), y[idx.to(y.device)].to(device, non_blocking=True)
