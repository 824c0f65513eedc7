"""MNIST (LeCun et al., Gradient-Based Learning Applied to Document Recognition, 1998): IDX files from --data-dir."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.files import find_or_download
from harness.datasets.sources import (
    IDX_FORMATS,
    image_data,
    search_folders,
    torchvision_download,
)

URL_HOST = "ossci-datasets.s3.amazonaws.com"  # torchvision's MNIST mirror


@register_dataset("mnist", paper="LeCun et al., Proc. IEEE 1998")
def mnist(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """MNIST handwritten digits: 60,000 train + 10,000 test 28x28 grey images."""
    found = find_or_download(
        "mnist", data_dir, search_folders(data_dir, ["MNIST/raw", "mnist"]), IDX_FORMATS, cache_dir, URL_HOST,
        torchvision_download("MNIST"), "pass --data-dir DIR holding the MNIST IDX files.", classes=10,
    )
    # Madry et al. 2018 and RobustBench-era work: Linf 0.3, L2 2.0 on MNIST.
    return image_data("mnist", found, mean=(0.1307,), std=(0.3081,), eps_linf=0.3, eps_l2=2.0)
