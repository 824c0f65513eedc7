"""CIFAR-10 (Krizhevsky 2009): torchvision's files in --data-dir, or an ImageFolder copy (train/, test/)."""

import socket
from pathlib import Path

from harness import ImageData, register_dataset
from harness.errors import DatasetError
from harness.image_files import cached, is_image_folder, load_cifar_pickles, load_image_folder

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
URL_HOST = "www.cs.toronto.edu"


def _online(host: str = URL_HOST) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _candidates(data_dir: Path) -> list[Path]:
    return [data_dir, data_dir / "cifar10", data_dir / "cifar-10", data_dir / "cifar10-jpeg"]


@register_dataset("cifar10", paper="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009")
def cifar10(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images in 10 classes."""
    root = data_dir or Path("data")
    tried = []
    for cand in _candidates(root):
        batches = cand / "cifar-10-batches-py"
        tried.append(str(batches))
        if (batches / "data_batch_1").is_file():
            splits = cached(cache_dir, batches, "cifar10", lambda b=batches: load_cifar_pickles(b))
            break
        tried.append(f"{cand}/{{train,test}}/<class>/")
        if is_image_folder(cand):
            splits = cached(cache_dir, cand, "cifar10", lambda c=cand: load_image_folder(c, size=32))
            break
    else:
        if data_dir is not None and data_dir.exists() is False:
            where = f"--data-dir {data_dir} does not exist"
        else:
            where = f"looked in {', '.join(tried[:4])}"
        if _online():
            from torchvision.datasets import CIFAR10

            CIFAR10(str(root), train=True, download=True)
            CIFAR10(str(root), train=False, download=True)
            return cifar10(root, cache_dir)
        raise DatasetError(
            f"cifar10: no CIFAR-10 found ({where}) and no internet to download it; pass --data-dir DIR "
            "holding cifar-10-batches-py/ or an ImageFolder copy (train/<class>/*.jpg, test/<class>/*.jpg)."
        )
    x_tr, y_tr, x_te, y_te, classes = splits
    return ImageData(
        name="cifar10",
        x_train=x_tr,
        y_train=y_tr.long(),
        x_test=x_te,
        y_test=y_te.long(),
        classes=list(classes),
        mean=MEAN,
        std=STD,
        eps_linf=8 / 255,
        eps_l2=0.5,
        augment=True,
        source=str(cand),
    )
