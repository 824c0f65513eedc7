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
from harness.datasets.sources import image_data, search_folders, torchvision_download

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
    folders = search_folders(data_dir, [name, name.replace("cifar", "cifar-"), f"{name}-jpeg"])
    found = find_or_download(
        name, data_dir, folders, formats, cache_dir, URL_HOST, torchvision_download(tv_class),
        "pass --data-dir DIR holding either.", classes=n_classes,
    )
    return image_data(name, found, mean=mean, std=std, eps_linf=8 / 255, eps_l2=0.5, augment=True)
