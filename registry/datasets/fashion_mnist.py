"""Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images, from --data-dir or Debian's dataset-fashion-mnist."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.files import find_or_download
from harness.datasets.sources import (
    IDX_FORMATS,
    image_data,
    search_folders,
    torchvision_download,
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
URL_HOST = "fashion-mnist.s3-website.eu-central-1.amazonaws.com"  # torchvision's source
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@register_dataset("fashion_mnist", paper="Xiao et al., arXiv 1708.07747, 2017")
def fashion_mnist(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """Zalando's Fashion-MNIST: 60,000 train + 10,000 test images in 10 classes."""
    folders = search_folders(data_dir, ["FashionMNIST/raw", "fashion-mnist", "fashion_mnist"], DEBIAN_DIR)
    found = find_or_download(
        "fashion_mnist", data_dir, folders, IDX_FORMATS, cache_dir, URL_HOST, torchvision_download("FashionMNIST"),
        "install Debian's dataset-fashion-mnist or pass --data-dir DIR holding the IDX files.", classes=10,
    )
    # Budgets common in the Fashion-MNIST robustness literature (e.g. Croce & Hein 2020): Linf 0.1, L2 1.5.
    return image_data("fashion_mnist", found, mean=(0.2860,), std=(0.3530,), classes=CLASSES, eps_linf=0.1, eps_l2=1.5)
