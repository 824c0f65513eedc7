"""Dataset plugins: each on-disk format read from a tiny fake tree, cached, budgets set, clear errors when missing."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api.data import ImageData
from harness.api.errors import DatasetError
from harness.api.plugins import datasets
from harness.datasets import files as image_files
from harness.datasets.files import channel_stats, resize_center_crop


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download attempts, whatever the machine's network."""
    monkeypatch.setattr(image_files, "online", lambda *a, **k: False)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def write_cifar10_pickles(root: Path, n: int = 4) -> None:
    """torchvision's cifar-10-batches-py layout, with n random images per batch."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": _rng().integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def write_image_folder(root: Path, classes: int, per_class: int = 2, size: tuple[int, int] = (32, 32), suffix: str = ".png") -> None:
    """root/{train,test}/<class>/*.png of random pixels."""
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = _rng().integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}{suffix}")


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file, gzipped."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_cifar10_pickles_are_read_and_cached(tmp_path: Path, offline: None) -> None:
    write_cifar10_pickles(tmp_path / "data")
    data = datasets.get("cifar10").obj(tmp_path / "data", tmp_path / "cache")
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.x_train.dtype == torch.uint8 and data.classes[0] == "c0"
    assert data.eps_linf == pytest.approx(8 / 255) and data.eps_l2 == 0.5 and data.augment
    assert len(list((tmp_path / "cache" / "datasets").glob("cifar10-*.pt"))) == 1
    again = datasets.get("cifar10").obj(tmp_path / "data", tmp_path / "cache")
    assert torch.equal(again.x_train, data.x_train)


def test_cifar10_image_folder(tmp_path: Path, offline: None) -> None:
    write_image_folder(tmp_path / "cifar10-jpeg", classes=10)
    data = datasets.get("cifar10").obj(tmp_path, None)
    assert data.x_train.shape == (20, 3, 32, 32) and data.num_classes == 10
    assert data.y_test.tolist() == [c for c in range(10) for _ in range(2)]


def test_cifar100_pickles_and_class_check(tmp_path: Path, offline: None) -> None:
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        rows = {"data": _rng().integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n))}
        (d / name).write_bytes(pickle.dumps(rows))
    (d / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)]}))
    data = datasets.get("cifar100").obj(tmp_path, None)
    assert data.num_classes == 100 and data.x_test.shape == (3, 3, 32, 32)
    ten = tmp_path / "ten"
    write_image_folder(ten, classes=10, per_class=1)
    with pytest.raises(DatasetError, match="holds 10 classes, expected 100"):
        datasets.get("cifar100").obj(ten, None)


def test_svhn_mat_labels_map_ten_to_zero(tmp_path: Path, offline: None) -> None:
    from scipy.io import savemat

    for name, n in (("train_32x32.mat", 5), ("test_32x32.mat", 3)):
        x = _rng().integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        savemat(tmp_path / name, {"X": x, "y": np.array([[10], [1], [2], [9], [10]][:n], dtype=np.uint8)})
    data = datasets.get("svhn").obj(tmp_path, None)
    assert data.x_train.shape == (5, 3, 32, 32) and data.y_train.tolist() == [0, 1, 2, 9, 0]
    assert data.augment and not data.flip  # mirrored digits are not digits
    mat = __import__("scipy.io").io.loadmat(tmp_path / "train_32x32.mat")["X"]
    assert torch.equal(data.x_train[1], torch.from_numpy(mat[:, :, :, 1]).permute(2, 0, 1))


def write_mnist_raw(raw: Path) -> None:
    """The four gzipped IDX files (6 train, 4 test random 28x28 images) in `raw`."""
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", _rng().integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_mnist_idx_and_budgets(tmp_path: Path, offline: None) -> None:
    write_mnist_raw(tmp_path / "MNIST" / "raw")
    data = datasets.get("mnist").obj(tmp_path, None)
    assert data.x_train.shape == (6, 1, 28, 28) and data.y_test.tolist() == [0, 1, 2, 3]
    assert data.eps_linf == 0.3 and data.eps_l2 == 2.0 and data.num_classes == 10


def test_fashion_mnist_idx_classes_budgets_and_cache(tmp_path: Path, offline: None) -> None:
    write_mnist_raw(tmp_path / "FashionMNIST" / "raw")
    data = datasets.get("fashion_mnist").obj(tmp_path, tmp_path / "cache")
    assert data.x_train.shape == (6, 1, 28, 28) and data.y_train.dtype == torch.long
    assert data.classes[0] == "T-shirt/top" and data.classes[-1] == "Ankle boot"
    assert (data.eps_linf, data.eps_l2, data.mean, data.augment) == (0.1, 1.5, (0.2860,), False)
    assert data.source == str(tmp_path / "FashionMNIST" / "raw")
    assert len(list((tmp_path / "cache" / "datasets").glob("fashion_mnist-*.pt"))) == 1


def test_online_download_goes_through_torchvision_into_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the host reachable, torchvision's class fetches each split into --data-dir, then the files load."""
    import torchvision.datasets

    calls: list[tuple[str, dict]] = []

    class FakeMNIST:
        def __init__(self, root: str, download: bool = False, **split: object) -> None:
            calls.append((root, {"download": download, **split}))
            write_mnist_raw(Path(root) / "MNIST" / "raw")

    monkeypatch.setattr(image_files, "online", lambda *a, **k: True)
    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    data = datasets.get("mnist").obj(tmp_path / "new", None)
    assert calls == [(str(tmp_path / "new"), {"download": True, "train": True}), (str(tmp_path / "new"), {"download": True, "train": False})]
    assert data.x_test.shape == (4, 1, 28, 28) and data.source == str(tmp_path / "new" / "MNIST" / "raw")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "mnist"] + ([] if Path("/usr/share/datasets/fashion-mnist").is_dir() else ["fashion_mnist"]))
def test_missing_data_offline_names_the_fix(name: str, tmp_path: Path, offline: None) -> None:
    with pytest.raises(DatasetError, match=rf"{name}: not found .*no internet.*--data-dir"):
        datasets.get(name).obj(tmp_path / "nowhere", None)


def test_imagefolder_224_center_crops_and_normalises(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=3, per_class=2, size=(300, 240), suffix=".jpg")
    data = datasets.get("imagefolder").obj(tmp_path, tmp_path / "cache")
    assert data.x_train.shape == (6, 3, 224, 224) and data.classes == ["class000", "class001", "class002"]
    assert data.eps_linf == pytest.approx(4 / 255)
    assert np.allclose(data.mean, data.x_train.float().div(255).mean((0, 2, 3)).tolist(), atol=1e-4)
    small = datasets.get("imagefolder32").obj(tmp_path, None)
    assert small.x_test.shape == (6, 3, 32, 32) and small.eps_linf == pytest.approx(8 / 255) and small.eps_l2 == 0.5
    assert small.augment and small.flip and small.source == str(tmp_path)


def test_imagefolder_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no --data-dir given"):
        datasets.get("imagefolder").obj(None, None)
    with pytest.raises(DatasetError, match=r"imagefolder32: --data-dir .* has no train/ and test/ class folders; pass --data-dir"):
        datasets.get("imagefolder32").obj(tmp_path, None)


def test_resize_center_crop_keeps_aspect() -> None:
    im = Image.new("RGB", (40, 20))
    im.paste((255, 0, 0), (0, 0, 6, 20))  # a red band on the left that a centre crop removes
    out = np.asarray(resize_center_crop(im, 10))
    assert out.shape == (10, 10, 3) and out[:, :, 0].max() == 0


def test_channel_stats_match_torch() -> None:
    x = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=7)
    ref = x.float() / 255
    assert np.allclose(mean, ref.mean((0, 2, 3)).tolist(), atol=1e-5)
    assert np.allclose(std, ref.permute(1, 0, 2, 3).flatten(1).std(1, unbiased=False).tolist(), atol=1e-5)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian() -> None:
    data: ImageData = datasets.get("fashion_mnist").obj(None, None)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.classes[-1] == "Ankle boot"
