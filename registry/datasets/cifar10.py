"""CIFAR-10 (Krizhevsky 2009): torchvision's files in --data-dir, or an ImageFolder copy (train/, test/)."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.cifar import load_cifar


@register_dataset("cifar10", paper="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009")
def cifar10(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images in 10 classes."""
    return load_cifar("cifar10", "CIFAR10", "cifar-10-batches-py", "data_batch_1",
                      (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10, data_dir, cache_dir)
