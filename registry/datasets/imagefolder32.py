"""Any ImageFolder tree under --data-dir, resized to 32x32 for the CIFAR networks."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.files import channel_stats
from registry.datasets.imagefolder import load_folder


@register_dataset("imagefolder32", paper="torchvision.datasets.ImageFolder layout")
def imagefolder32(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """A user's ImageFolder tree at 32x32 with CIFAR's budgets (Linf 8/255, L2 0.5)."""
    (x_tr, y_tr, x_te, y_te, classes), source = load_folder("imagefolder32", data_dir, cache_dir, 32)
    mean, std = channel_stats(x_tr)
    return ImageData(
        name="imagefolder32",
        x_train=x_tr,
        y_train=y_tr.long(),
        x_test=x_te,
        y_test=y_te.long(),
        classes=list(classes),
        mean=mean,
        std=std,
        eps_linf=8 / 255,
        eps_l2=0.5,
        augment=True,
        source=str(source),
    )
