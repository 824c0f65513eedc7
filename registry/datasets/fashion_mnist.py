"""Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images, from --data-dir or Debian's dataset-fashion-mnist."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.files import Format, find_or_download, has_idx, idx_splits

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
URL_HOST = "fashion-mnist.s3-website.eu-central-1.amazonaws.com"  # torchvision's source
FORMATS: list[Format] = [("train-images-idx3-ubyte[.gz] and the three other IDX files", has_idx, idx_splits)]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _candidates(data_dir: Path | None) -> list[Path]:
    root = data_dir or Path("data")
    return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist", root / "fashion_mnist", DEBIAN_DIR]


@register_dataset("fashion_mnist", paper="Xiao et al., arXiv 1708.07747, 2017")
def fashion_mnist(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """Zalando's Fashion-MNIST: 60,000 train + 10,000 test images in 10 classes."""

    def download(folder: Path) -> None:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(folder), train=True, download=True)  # writes folder/FashionMNIST/raw/*-ubyte
        FashionMNIST(str(folder), train=False, download=True)

    (x_tr, y_tr, x_te, y_te, _), source = find_or_download(
        "fashion_mnist", data_dir, _candidates(data_dir), FORMATS, None, URL_HOST, download,
        "install Debian's dataset-fashion-mnist or pass --data-dir DIR holding the IDX files.", classes=10,
    )
    return ImageData(
        name="fashion_mnist",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        classes=CLASSES,
        mean=(0.2860,),
        std=(0.3530,),
        # Budgets common in the Fashion-MNIST robustness literature (e.g. Croce & Hein 2020): Linf 0.1, L2 1.5.
        eps_linf=0.1,
        eps_l2=1.5,
        source=str(source),
    )
