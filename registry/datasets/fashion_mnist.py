"""Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images, from --data-dir or Debian's dataset-fashion-mnist."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.errors import DatasetError
from harness.image_files import find_file, read_idx

import torch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@register_dataset("fashion_mnist", paper="Xiao et al., arXiv 1708.07747, 2017")
def fashion_mnist(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """Zalando's Fashion-MNIST: 60,000 train + 10,000 test images in 10 classes."""
    roots = []
    if data_dir is not None:
        roots += [data_dir, data_dir / "FashionMNIST" / "raw", data_dir / "fashion-mnist", data_dir / "fashion_mnist"]
    roots.append(DEBIAN_DIR)
    paths = [find_file(roots, [name]) for name in FILES]
    if None in paths:
        missing = FILES[paths.index(None)]
        raise DatasetError(
            f"fashion_mnist: {missing}[.gz] not found in {', '.join(map(str, roots))}; "
            "install Debian's dataset-fashion-mnist or pass --data-dir DIR holding the IDX files."
        )
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(read_idx(p).copy()) for p in paths)  # type: ignore[arg-type]
    return ImageData(
        name="fashion_mnist",
        x_train=x_tr.unsqueeze(1),
        y_train=y_tr.long(),
        x_test=x_te.unsqueeze(1),
        y_test=y_te.long(),
        classes=CLASSES,
        mean=(0.2860,),
        std=(0.3530,),
        eps_linf=0.1,
        eps_l2=1.5,
        source=str(paths[0].parent),  # type: ignore[union-attr]
    )
