"""What the file-backed dataset plugins share: where to look, how torchvision downloads, and the ImageData they return."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.api.data import ImageData
from harness.api.errors import DatasetError
from harness.datasets.files import (
    Format,
    Splits,
    cached,
    channel_stats,
    has_idx,
    idx_splits,
    is_image_folder,
    load_image_folder,
)

# The MNIST family (MNIST, Fashion-MNIST) ships as four IDX files.
IDX_FORMATS: list[Format] = [("train-images-idx3-ubyte[.gz] and the three other IDX files", has_idx, idx_splits)]
# torchvision's keyword for each split of most of its datasets; SVHN names them with split="train"/"test".
TRAIN_TEST: tuple[dict[str, Any], ...] = ({"train": True}, {"train": False})


def search_folders(data_dir: Path | None, subfolders: Sequence[str], *elsewhere: Path) -> list[Path]:
    """Where a dataset's files may be: --data-dir (./data when not given), its `subfolders`, then `elsewhere`."""
    root = data_dir or Path("data")
    return [root, *(root / s for s in subfolders), *elsewhere]


def torchvision_download(tv_class: str, splits: Sequence[dict[str, Any]] = TRAIN_TEST) -> Callable[[Path], None]:
    """A downloader that has torchvision's `tv_class` fetch each of `splits` into a folder (torchvision's own layout)."""

    def download(folder: Path) -> None:
        import torchvision.datasets  # only when downloading: importing torchvision is slow

        cls = getattr(torchvision.datasets, tv_class)
        for kwargs in splits:
            cls(str(folder), download=True, **kwargs)

    return download


def image_folder(tag: str, data_dir: Path | None, cache_dir: Path | None, size: int) -> tuple[Splits, Path]:
    """Decode `data_dir`'s train/ and test/ class folders at size x size (shorter side, then centre crop), cached."""
    if data_dir is None or not is_image_folder(data_dir):
        given = f"--data-dir {data_dir} has no train/ and test/ class folders" if data_dir else "no --data-dir given"
        raise DatasetError(
            f"{tag}: {given}; pass --data-dir DIR laid out as DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg."
        )
    return cached(cache_dir, data_dir, f"{tag}{size}", lambda: load_image_folder(data_dir, size=size)), data_dir


def image_data(
    name: str,
    found: tuple[Splits, Path],
    *,
    eps_linf: float,
    eps_l2: float,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    classes: list[str] | None = None,
    augment: bool = False,
    flip: bool = True,
) -> ImageData:
    """The ImageData of loaded splits and their source; mean and std measured on the train images when not given."""
    (x_tr, y_tr, x_te, y_te, found_classes), source = found
    if mean is None or std is None:
        mean, std = channel_stats(x_tr)
    return ImageData(
        name=name,
        x_train=x_tr,
        y_train=y_tr.long(),
        x_test=x_te,
        y_test=y_te.long(),
        classes=list(classes or found_classes),
        mean=mean,
        std=std,
        eps_linf=eps_linf,
        eps_l2=eps_l2,
        augment=augment,
        flip=flip,
        source=str(source),
    )
