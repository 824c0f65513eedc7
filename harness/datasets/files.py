"""Readers for image datasets on disk (IDX, CIFAR pickles, SVHN .mat, ImageFolder trees), the decoded-dataset cache, finding or downloading the files."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from harness.api.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

Splits = tuple[Tensor, Tensor, Tensor, Tensor, list[str]]


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (optionally gzipped), as in the MNIST distribution files."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
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


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def has_idx(folder: Path) -> bool:
    """Whether `folder` holds the four MNIST-style IDX files (plain or gzipped)."""
    return all(find_file([folder], [name]) is not None for name in IDX_FILES)


def idx_splits(folder: Path) -> Splits:
    """The four MNIST-style IDX files of `folder` as (N, 1, H, W) uint8 images and labels (10 classes)."""
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(read_idx(find_file([folder], [n])).copy()) for n in IDX_FILES)  # type: ignore[arg-type]
    return x_tr.unsqueeze(1), y_tr.long(), x_te.unsqueeze(1), y_te.long(), [str(i) for i in range(10)]


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


def online(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether `host` is reachable, so a dataset may be downloaded instead of reported missing."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` (bilinear), then the central size x size square, as torchvision's eval transform."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)  # type: ignore[attr-defined]
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _folder_split(root: Path, classes: list[str] | None, size: int | None) -> tuple[Tensor, Tensor, list[str]]:
    if not root.is_dir():
        raise DatasetError(f"No folder {root} (expected {root}/<class>/*.jpg).")
    names = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        for f in files:
            with Image.open(f) as src:
                im = src.convert("RGB")
                if size is not None:
                    im = resize_center_crop(im, size)
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


def load_svhn_mat(folder: Path) -> Splits:
    """torchvision's SVHN files `train_32x32.mat` and `test_32x32.mat` (labels 1-10, where 10 means digit 0)."""
    from scipy.io import loadmat

    def split(name: str) -> tuple[Tensor, Tensor]:
        mat = loadmat(folder / name)
        x = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))  # (H, W, C, N) -> (N, C, H, W)
        y = torch.from_numpy(mat["y"].astype(np.int64).ravel() % 10)
        return x, y

    x_tr, y_tr = split("train_32x32.mat")
    x_te, y_te = split("test_32x32.mat")
    return x_tr, y_tr, x_te, y_te, [str(i) for i in range(10)]


def channel_stats(x: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of [0, 1] pixels, in chunks so uint8 sets are never copied whole as floats."""
    c = x.shape[1]
    total, sq, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for i in range(0, len(x), chunk):
        b = x[i : i + chunk].double()
        b = b / 255 if x.dtype == torch.uint8 else b
        total += b.sum((0, 2, 3))
        sq += (b * b).sum((0, 2, 3))
        n += b.numel() // c
    mean = total / max(n, 1)
    std = (sq / max(n, 1) - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def is_image_folder(root: Path) -> bool:
    """Whether `root` has train/ and test/ class folders."""
    return (root / "train").is_dir() and (root / "test").is_dir()


def tree_stamp(source: Path) -> str:
    """A digest of the relative path, size and mtime of every file a dataset in `source` can be read from.

    A folder's own mtime changes only when its direct entries do, so an image added, removed or rewritten inside
    a class folder left a stamp of `source` alone and the cache served stale tensors. An image folder's stamp
    covers its whole train/ and test/ trees; any other source (pickles, IDX or .mat files) covers its own files and
    those one folder down (e.g. `cifar-10-batches-py/`), so a `./data` holding other datasets is not walked whole.
    """
    def walk(folder: str, depth: int | None) -> Iterator[str]:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)  # name order, whatever the filesystem lists first
        for e in entries:
            if e.is_file():
                yield e.path
            elif e.is_dir() and not e.name.startswith(".") and (depth is None or depth > 0):
                yield from walk(e.path, None if depth is None else depth - 1)

    roots = [(str(source / "train"), None), (str(source / "test"), None)] if is_image_folder(source) else [(str(source), 1)]
    digest = hashlib.sha256()
    for root, depth in roots:
        for path in walk(root, depth):
            st = os.stat(path)
            digest.update(f"{os.path.relpath(path, source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached(cache_dir: Path | None, source: Path, tag: str, load: Callable[[], Splits]) -> Splits:
    """Decode once: later loads of the same source folder read a tensor file from the cache."""
    if cache_dir is None:
        return load()
    stamp = f"{tag}:{source.resolve()}:{tree_stamp(source)}"
    path = cache_dir / "datasets" / f"{tag}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        return tuple(torch.load(path, weights_only=True).values())
    splits = load()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(dict(zip(("x_train", "y_train", "x_test", "y_test", "classes"), splits)), tmp)
    tmp.replace(path)
    return splits


Format = tuple[str, Callable[[Path], bool], Callable[[Path], Splits]]


def locate(candidates: list[Path], formats: list[Format], cache_dir: Path | None, tag: str) -> tuple[Splits, Path] | None:
    """The first candidate folder holding one of `formats` (description, test, loader), decoded once and cached."""
    for cand in candidates:
        for _, present, load in formats:
            if present(cand):
                return cached(cache_dir, cand, tag, partial(load, cand)), cand
    return None


def missing(tag: str, data_dir: Path | None, candidates: list[Path], formats: list[Format], fix: str) -> DatasetError:
    """One-line error naming where a dataset was looked for, what was expected and how to provide it."""
    where = f"--data-dir {data_dir} does not exist" if data_dir is not None and not data_dir.exists() else (
        f"looked in {', '.join(map(str, dict.fromkeys(candidates)))}"
    )
    wanted = " or ".join(desc for desc, _, _ in formats)
    return DatasetError(f"{tag}: not found ({where}; expected {wanted}) and no internet to download it; {fix}")


def find_or_download(
    tag: str,
    data_dir: Path | None,
    candidates: list[Path],
    formats: list[Format],
    cache_dir: Path | None,
    host: str,
    download: Callable[[Path], None],
    fix: str,
    classes: int | None = None,
) -> tuple[Splits, Path]:
    """Load from the first candidate that holds the data; else download into candidates[0] when `host` answers."""
    found = locate(candidates, formats, cache_dir, tag)
    if found is None:
        if not online(host):
            raise missing(tag, data_dir, candidates, formats, fix)
        candidates[0].mkdir(parents=True, exist_ok=True)
        download(candidates[0])
        found = locate(candidates, formats, cache_dir, tag)
        if found is None:
            raise DatasetError(f"{tag}: downloaded into {candidates[0]} but found no {formats[0][0]} there.")
    splits, source = found
    if classes is not None and len(splits[4]) != classes:
        raise DatasetError(
            f"{tag}: {source} holds {len(splits[4])} classes, expected {classes}; point --data-dir at the {tag} copy."
        )
    return splits, source
