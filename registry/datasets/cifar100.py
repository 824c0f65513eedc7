"""CIFAR-100 (Krizhevsky 2009): torchvision's files in --data-dir, or an ImageFolder copy (train/, test/)."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.image_files import Format, find_or_download, is_image_folder, load_cifar_pickles, load_image_folder

MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
URL_HOST = "www.cs.toronto.edu"
FORMATS: list[Format] = [
    ("cifar-100-python/train", lambda d: (d / "cifar-100-python" / "train").is_file(),
     lambda d: load_cifar_pickles(d / "cifar-100-python")),
    ("{train,test}/<class>/*.jpg", is_image_folder, lambda d: load_image_folder(d, size=32)),
]


def _candidates(root: Path) -> list[Path]:
    return [root, root / "cifar100", root / "cifar-100", root / "cifar100-jpeg"]


@register_dataset("cifar100", paper="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009")
def cifar100(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """CIFAR-100: 50,000 train + 10,000 test 32x32 colour images in 100 fine classes."""
    root = data_dir or Path("data")

    def download(folder: Path) -> None:
        from torchvision.datasets import CIFAR100

        CIFAR100(str(folder), train=True, download=True)
        CIFAR100(str(folder), train=False, download=True)

    found = find_or_download(
        "cifar100", data_dir, _candidates(root), FORMATS, cache_dir, URL_HOST, download,
        "pass --data-dir DIR holding either.", classes=100,
    )
    (x_tr, y_tr, x_te, y_te, classes), source = found
    return ImageData(
        name="cifar100",
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
        source=str(source),
    )
