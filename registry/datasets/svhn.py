"""SVHN (Netzer et al., Reading Digits in Natural Images with Unsupervised Feature Learning, 2011), cropped digits."""

from pathlib import Path

from harness import ImageData, register_dataset
from harness.datasets.files import (
    Format,
    find_or_download,
    is_image_folder,
    load_image_folder,
    load_svhn_mat,
)
from harness.datasets.sources import image_data, search_folders, torchvision_download

MEAN, STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
URL_HOST = "ufldl.stanford.edu"
FORMATS: list[Format] = [
    ("{train,test}_32x32.mat", lambda d: (d / "train_32x32.mat").is_file() and (d / "test_32x32.mat").is_file(), load_svhn_mat),
    ("{train,test}/<class>/*.png", is_image_folder, lambda d: load_image_folder(d, size=32)),
]


@register_dataset("svhn", paper="Netzer et al., NIPS Workshop on Deep Learning 2011")
def svhn(data_dir: Path | None = None, cache_dir: Path | None = None) -> ImageData:
    """SVHN cropped digits: 73,257 train + 26,032 test 32x32 colour images in 10 classes (extra split unused)."""
    found = find_or_download(
        "svhn", data_dir, search_folders(data_dir, ["svhn", "SVHN"]), FORMATS, cache_dir, URL_HOST,
        torchvision_download("SVHN", ({"split": "train"}, {"split": "test"})),
        "pass --data-dir DIR holding torchvision's SVHN .mat files.", classes=10,
    )
    # flip=False: mirrored digits are other glyphs (2, 5, 7), so crop jitter only.
    return image_data("svhn", found, mean=MEAN, std=STD, eps_linf=8 / 255, eps_l2=0.5, augment=True, flip=False)
