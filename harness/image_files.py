"""Readers for image datasets on disk: IDX (MNIST family), CIFAR pickles, ImageFolder trees; decoded once, cached."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from harness.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

Splits = tuple[Tensor, Tensor, Tensor, Tensor, list[str]]


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (optionally gzipped), as in the MNIST distribution files."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()  # type: ignore[operator]
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file.")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_file(roots: list[Path], names: list[str]) -> Path | None:
    """The first existing `root/name` (also with '.gz')."""
    for root in roots:
        for name in names:
            for cand in (root / name, root / f"{name}.gz"):
                if cand.is_file():
                    return cand
    return None


def load_cifar_pickles(folder: Path) -> Splits:
    """torchvision's `cifar-10-batches-py` (or CIFAR-100 `cifar-100-python`) folder."""
    def unpickle(p: Path) -> dict:
        with open(p, "rb") as f:
            return pickle.load(f, encoding="latin1")

    if (folder / "data_batch_1").is_file():
        train = [unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
        test = unpickle(folder / "test_batch")
        classes = unpickle(folder / "batches.meta")["label_names"]
        key = "labels"
    else:
        train, test = [unpickle(folder / "train")], unpickle(folder / "test")
        classes = unpickle(folder / "meta")["fine_label_names"]
        key = "fine_labels"
    x_tr = np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32)
    y_tr = np.concatenate([b[key] for b in train])
    x_te = np.asarray(test["data"]).reshape(-1, 3, 32, 32)
    return (torch.from_numpy(x_tr), torch.tensor(y_tr), torch.from_numpy(x_te), torch.tensor(test[key]), list(classes))


def _folder_split(root: Path, classes: list[str] | None, size: int | None) -> tuple[Tensor, Tensor, list[str]]:
    names = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(names):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
            labels.append(label)
    if not images:
        raise DatasetError(f"No images under {root} (expected {root}/<class>/*.jpg).")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DatasetError(f"Images under {root} differ in size {sorted(shapes)[:3]}; give the dataset a size.")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels), names


def load_image_folder(root: Path, size: int | None = None) -> Splits:
    """`root/train/<class>/*` and `root/test/<class>/*` as uint8 tensors; classes sorted by name."""
    x_tr, y_tr, classes = _folder_split(root / "train", None, size)
    x_te, y_te, _ = _folder_split(root / "test", classes, size)
    return x_tr, y_tr, x_te, y_te, classes


def is_image_folder(root: Path) -> bool:
    """Whether `root` has train/ and test/ class folders."""
    return (root / "train").is_dir() and (root / "test").is_dir()


def cached(cache_dir: Path | None, source: Path, tag: str, load: Callable[[], Splits]) -> Splits:
    """Decode once: later loads of the same source folder read a tensor file from the cache."""
    if cache_dir is None:
        return load()
    stamp = f"{tag}:{source.resolve()}:{source.stat().st_mtime_ns}"
    path = cache_dir / "datasets" / f"{tag}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        return tuple(torch.load(path, weights_only=True).values())  # type: ignore[return-value]
    splits = load()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(dict(zip(("x_train", "y_train", "x_test", "y_test", "classes"), splits)), tmp)
    tmp.replace(path)
    return splits
