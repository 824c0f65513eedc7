"""CIFAR-100 (Krizhevsky 2009): torchvision's files in --data-dir, or an ImageFolder copy (train/, test/)."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.cifar import load_cifar


@register_dataset("cifar100", paper="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009")
def cifar100(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """CIFAR-100: 50,000 train + 10,000 test 32x32 colour images in 100 fine classes."""
    return load_cifar("cifar100", "CIFAR100", "cifar-100-python", "train",
                      (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100, data_dir, cache_dir)
