"""Any ImageFolder tree under --data-dir (train/<class>/*, test/<class>/*), at 224x224 for ImageNet-style networks."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.sources import image_data, image_folder


@register_dataset("imagefolder", paper="torchvision.datasets.ImageFolder layout")
def imagefolder(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """A user's ImageFolder tree at 224x224 (for resnet18/resnet50); held in memory, so up to ~20k images."""
    found = image_folder("imagefolder", data_dir, cache_dir, 224)
    # ImageNet-scale budgets (RobustBench ImageNet Linf 4/255; L2 3.0 as in Engstrom et al.'s robustness library).
    return image_data("imagefolder", found, eps_linf=4 / 255, eps_l2=3.0, augment=True)
