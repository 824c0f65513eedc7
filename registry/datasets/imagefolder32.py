"""Any ImageFolder tree under --data-dir, resized to 32x32 for the CIFAR networks."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.sources import image_data, image_folder


@register_dataset("imagefolder32", paper="torchvision.datasets.ImageFolder layout")
def imagefolder32(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """A user's ImageFolder tree at 32x32 with CIFAR's budgets (Linf 8/255, L2 0.5)."""
    found = image_folder("imagefolder32", data_dir, cache_dir, 32)
    return image_data("imagefolder32", found, eps_linf=8 / 255, eps_l2=0.5, augment=True)
