"""MNIST (LeCun et al., Gradient-Based Learning Applied to Document Recognition, 1998): IDX files from --data-dir."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.files import Format, find_or_download, has_idx, idx_splits

URL_HOST = "ossci-datasets.s3.amazonaws.com"  # torchvision's MNIST mirror
FORMATS: list[Format] = [("train-images-idx3-ubyte[.gz] and the three other IDX files", has_idx, idx_splits)]


def _candidates(root: Path) -> list[Path]:
    return [root, root / "MNIST" / "raw", root / "mnist"]


@register_dataset("mnist", paper="LeCun et al., Proc. IEEE 1998")
def mnist(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """MNIST handwritten digits: 60,000 train + 10,000 test 28x28 grey images."""
    root = data_dir or Path("data")

    def download(folder: Path) -> None:
        from torchvision.datasets import MNIST

        MNIST(str(folder), train=True, download=True)  # writes folder/MNIST/raw/*-ubyte
        MNIST(str(folder), train=False, download=True)

    (x_tr, y_tr, x_te, y_te, classes), source = find_or_download(
        "mnist", data_dir, _candidates(root), FORMATS, cache_dir, URL_HOST, download,
        "pass --data-dir DIR holding the MNIST IDX files.", classes=10,
    )
    return ImageData(
        name="mnist",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        classes=classes,
        mean=(0.1307,),
        std=(0.3081,),
        # Madry et al. 2018 and RobustBench-era work: Linf 0.3, L2 2.0 on MNIST.
        eps_linf=0.3,
        eps_l2=2.0,
        source=str(source),
    )
