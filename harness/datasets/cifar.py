"""What CIFAR-10 and CIFAR-100 share: where their files may be, how they load, and their budgets."""

from __future__ import annotations

from pathlib import Path

from harness.api.data import ImageData
from harness.datasets.files import (
    Format,
    find_or_download,
    is_image_folder,
    load_cifar_pickles,
    load_image_folder,
)

URL_HOST = "www.cs.toronto.edu"


def load_cifar(
    name: str,
    tv_class: str,
    pickles: str,
    marker: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    n_classes: int,
    data_dir: Path | None,
    cache_dir: Path | None,
) -> ImageData:
    """torchvision's pickled `pickles/` folder or an ImageFolder copy under --data-dir (downloaded when online)."""
    formats: list[Format] = [
        (f"{pickles}/{marker}", lambda d: (d / pickles / marker).is_file(), lambda d: load_cifar_pickles(d / pickles)),
        ("{train,test}/<class>/*.jpg", is_image_folder, lambda d: load_image_folder(d, size=32)),
    ]
    root = data_dir or Path("data")
    stem = name.replace("cifar", "cifar-")
    candidates = [root, root / name, root / stem, root / f"{name}-jpeg"]

    def download(folder: Path) -> None:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, tv_class)
        cls(str(folder), train=True, download=True)
        cls(str(folder), train=False, download=True)

    (x_tr, y_tr, x_te, y_te, classes), source = find_or_download(
        name, data_dir, candidates, formats, cache_dir, URL_HOST, download,
        "pass --data-dir DIR holding either.", classes=n_classes,
    )
    return ImageData(
        name=name, x_train=x_tr, y_train=y_tr.long(), x_test=x_te, y_test=y_te.long(), classes=list(classes),
        mean=mean, std=std, eps_linf=8 / 255, eps_l2=0.5, augment=True, source=str(source),
    )
