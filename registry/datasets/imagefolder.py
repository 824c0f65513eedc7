"""Any ImageFolder tree under --data-dir (train/<class>/*, test/<class>/*), at 224x224 for ImageNet-style networks."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.api.errors import DatasetError
from harness.datasets.files import (
    Splits,
    cached,
    channel_stats,
    is_image_folder,
    load_image_folder,
)

SIZE = 224


def load_folder(tag: str, data_dir: Path | None, cache_dir: Path | None, size: int) -> tuple[Splits, Path]:
    """Decode `data_dir`'s train/ and test/ class folders at size x size (shorter side, then centre crop)."""
    if data_dir is None or not is_image_folder(data_dir):
        given = f"--data-dir {data_dir} has no train/ and test/ class folders" if data_dir else "no --data-dir given"
        raise DatasetError(
            f"{tag}: {given}; pass --data-dir DIR laid out as DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg."
        )
    return cached(cache_dir, data_dir, f"{tag}{size}", lambda: load_image_folder(data_dir, size=size)), data_dir


@register_dataset("imagefolder", paper="torchvision.datasets.ImageFolder layout")
def imagefolder(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """A user's ImageFolder tree at 224x224 (for resnet18/resnet50); held in memory, so up to ~20k images."""
    (x_tr, y_tr, x_te, y_te, classes), source = load_folder("imagefolder", data_dir, cache_dir, SIZE)
    mean, std = channel_stats(x_tr)
    return ImageData(
        name="imagefolder",
        x_train=x_tr,
        y_train=y_tr.long(),
        x_test=x_te,
        y_test=y_te.long(),
        classes=list(classes),
        mean=mean,
        std=std,
        # ImageNet-scale budgets (RobustBench ImageNet Linf 4/255; L2 3.0 as in Engstrom et al.'s robustness library).
        eps_linf=4 / 255,
        eps_l2=3.0,
        augment=True,
        source=str(source),
    )
