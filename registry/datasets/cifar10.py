"""CIFAR-10 (Krizhevsky 2009): torchvision's files in --data-dir, or an ImageFolder copy (train/, test/)."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.image_files import Format, find_or_download, is_image_folder, load_cifar_pickles, load_image_folder

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
URL_HOST = "www.cs.toronto.edu"
FORMATS: list[Format] = [
    ("cifar-10-batches-py/data_batch_1", lambda d: (d / "cifar-10-batches-py" / "data_batch_1").is_file(),
     lambda d: load_cifar_pickles(d / "cifar-10-batches-py")),
    ("{train,test}/<class>/*.jpg", is_image_folder, lambda d: load_image_folder(d, size=32)),
]


def _candidates(root: Path) -> list[Path]:
    return [root, root / "cifar10", root / "cifar-10", root / "cifar10-jpeg"]


@register_dataset("cifar10", paper="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009")
def cifar10(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images in 10 classes."""
    root = data_dir or Path("data")

    def download(folder: Path) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(folder), train=True, download=True)
        CIFAR10(str(folder), train=False, download=True)

    found = find_or_download(
        "cifar10", data_dir, _candidates(root), FORMATS, cache_dir, URL_HOST, download,
        "pass --data-dir DIR holding either.", classes=10,
    )
    (x_tr, y_tr, x_te, y_te, classes), source = found
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
        source=str(source),
    )
