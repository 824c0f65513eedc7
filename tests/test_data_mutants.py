"""Tests written against surviving dataset and checkpoint mutants: what is found where, how it is decoded and cached, what is refused.

Pins harness/datasets/files.py (IDX headers, ImageFolder ordering and labels, resizing, channel statistics, the decoded-dataset
cache and its key, candidate order, the missing-dataset message), harness/datasets/sources.py (search order, ImageData
statistics) and harness/engine/checkpoints.py (which file a spec names, unwrapping state dicts, mismatch messages, provenance).
Every expected value is known by construction: constant-colour PNGs of a few pixels whose value says which file they are,
hand-written headers and state dicts, tensors of one value. No real dataset, no network (localhost at most), no GPU.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from harness.api.config import JobSpec, TrainConfig
from harness.api.data import ImageData
from harness.api.errors import CheckpointError, DatasetError
from harness.api.nets import Normalized
from harness.api.plugins import architectures, datasets
from harness.datasets import files as image_files
from harness.datasets.files import (
    Format,
    Splits,
    cached,
    channel_stats,
    find_file,
    find_or_download,
    has_idx,
    load_image_folder,
    locate,
    missing,
    online,
    read_idx,
    resize_center_crop,
)
from harness.datasets.sources import image_data, image_folder, search_folders
from harness.engine import checkpoints
from harness.engine.checkpoints import Source, checkpoint_shas, fit, load_dense, resolve
from harness.engine.grid import parse_grid

CPU = torch.device("cpu")

# ---- helpers ----


def png(path: Path, value: int, size: tuple[int, int] = (2, 2)) -> None:
    """A grey PNG of one pixel value (lossless, so the value identifies the file after decoding)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def tree(root: Path, layout: dict[str, dict[str, list[int]]]) -> None:
    """root/<split>/<class>/<i>.png, one grey PNG per value listed."""
    for split, classes in layout.items():
        for name, values in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, value in enumerate(values):
                png(root / split / name / f"{i}.png", value)


def first_pixels(x: Tensor) -> list[int]:
    """The red value of each image's top-left pixel: which file each row came from."""
    return x[:, 0, 0, 0].tolist()


def splits_of(tag: str, n_classes: int = 1) -> Splits:
    """Tiny splits whose first class name says which loader produced them."""
    x = torch.zeros(1, 1, 1, 1, dtype=torch.uint8)
    y = torch.zeros(1, dtype=torch.long)
    return x, y, x, y, [tag] + [f"{tag}{i}" for i in range(1, n_classes)]


def marker_format(desc: str, marker: str) -> Format:
    """A format present where `marker` exists, loading splits named after it and the folder."""
    return (desc, lambda d: (d / marker).exists(), lambda d: splits_of(f"{marker}@{d.name}"))


@pytest.fixture
def reversed_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders list their entries in reverse name order, as an unsorted file system may."""
    iterdir, glob = Path.iterdir, Path.glob

    def rev_iterdir(self: Path) -> Iterator[Path]:
        return iter(sorted(iterdir(self), reverse=True))

    def rev_glob(self: Path, pattern: str, **kw: Any) -> Iterator[Path]:
        return iter(sorted(glob(self, pattern, **kw), reverse=True))

    monkeypatch.setattr(Path, "iterdir", rev_iterdir)
    monkeypatch.setattr(Path, "glob", rev_glob)


# ---- IDX files: harness/datasets/files.py ----


def _idx_bytes(type_code: int, first: int = 0) -> bytes:
    return bytes([first, 0, type_code, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3])


def test_read_idx_reads_an_unsigned_byte_vector(tmp_path: Path) -> None:
    """A 1-d IDX of three bytes is those three bytes."""
    path = tmp_path / "v-idx1-ubyte"
    path.write_bytes(_idx_bytes(0x08))
    assert read_idx(path).tolist() == [1, 2, 3]


@pytest.mark.parametrize(("type_code", "first"), [(0x0D, 0), (0x08, 1)], ids=["float-idx", "bad-magic"])
def test_read_idx_refuses_what_is_not_an_unsigned_byte_idx(type_code: int, first: int, tmp_path: Path) -> None:
    """A float IDX (type 0x0D) or a header not starting with zero bytes is refused by name, not misread as bytes."""
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(_idx_bytes(type_code, first))
    with pytest.raises(DatasetError, match="is not an unsigned-byte IDX file"):
        read_idx(path)


def test_find_file_prefers_the_plain_file_to_its_gzip(tmp_path: Path) -> None:
    """Where both `name` and `name.gz` exist, the plain file is read."""
    (tmp_path / "f").write_bytes(b"plain")
    with gzip.open(tmp_path / "f.gz", "wb") as fh:
        fh.write(b"zipped")
    assert find_file([tmp_path], ["f"]) == tmp_path / "f"


def test_three_of_the_four_idx_files_are_not_an_idx_folder(tmp_path: Path) -> None:
    """has_idx needs all four MNIST files; a folder missing the test labels is not one."""
    for name in image_files.IDX_FILES[:3]:
        (tmp_path / name).write_bytes(_idx_bytes(0x08))
    assert not has_idx(tmp_path)
    (tmp_path / image_files.IDX_FILES[3]).write_bytes(_idx_bytes(0x08))
    assert has_idx(tmp_path)


# ---- online(): harness/datasets/files.py ----


def test_online_is_true_for_a_listening_port_and_false_for_a_closed_one() -> None:
    """A localhost port that accepts connections is reachable; the same port once closed is not."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert online("127.0.0.1", port, timeout=2.0) is True
    finally:
        server.close()
    assert online("127.0.0.1", port, timeout=2.0) is False


def test_online_checks_https_with_a_three_second_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The downloads are HTTPS, so port 443 is the one tried by default, for at most 3 s."""
    calls: list[tuple[Any, ...]] = []

    class Conn:
        def close(self) -> None:
            calls.append(("closed",))

    def fake(address: tuple[str, int], timeout: float) -> Conn:
        calls.append((address, timeout))
        return Conn()

    monkeypatch.setattr(image_files.socket, "create_connection", fake)
    assert online("example.org") is True
    assert calls == [(("example.org", 443), 3.0), ("closed",)]


# ---- resizing and ImageFolder trees: harness/datasets/files.py ----


@pytest.mark.parametrize("tall", [True, False], ids=["tall", "wide"])
def test_resize_center_crop_scales_the_shorter_side_and_crops_the_longer_from_the_middle(tall: bool) -> None:
    """A 20x40 (or 40x20) image with 6-px red and blue bands at the ends of its long side comes out uniformly grey
    at 10x10: the bands are cropped away, not squashed in."""
    size, red, blue = ((20, 40), (0, 0, 20, 6), (0, 34, 20, 40)) if tall else ((40, 20), (0, 0, 6, 20), (34, 0, 40, 20))
    im = Image.new("RGB", size, (128, 128, 128))
    im.paste((255, 0, 0), red)
    im.paste((0, 0, 255), blue)
    out = np.asarray(resize_center_crop(im, 10))
    assert out.shape == (10, 10, 3) and (out == 128).all()


def test_classes_and_files_are_in_name_order_whatever_the_listing(tmp_path: Path, reversed_listing: None) -> None:
    """Classes are sorted by name and files within a class too, even where the file system lists them in reverse."""
    tree(tmp_path, {"train": {"a": [10, 11, 12], "b": [20], "c": [30, 31]}, "test": {"a": [40], "b": [50], "c": [60]}})
    x_tr, y_tr, x_te, y_te, classes = load_image_folder(tmp_path)
    assert classes == ["a", "b", "c"]
    assert first_pixels(x_tr) == [10, 11, 12, 20, 30, 31] and y_tr.tolist() == [0, 0, 0, 1, 2, 2]
    assert first_pixels(x_te) == [40, 50, 60] and y_te.tolist() == [0, 1, 2]


def test_upper_case_suffixes_are_images(tmp_path: Path) -> None:
    """`IMG_1.PNG` from a camera is read like `img.png`; a text file beside it is not."""
    tree(tmp_path, {"train": {"a": [10]}, "test": {"a": [20]}})
    png(tmp_path / "train" / "a" / "IMG_1.PNG", 30)
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    x_tr, y_tr, *_ = load_image_folder(tmp_path)
    assert sorted(first_pixels(x_tr)) == [10, 30] and y_tr.tolist() == [0, 0]


def test_a_stray_file_beside_the_class_folders_is_not_a_class(tmp_path: Path) -> None:
    """train/README.txt (or .DS_Store) does not become an empty class shifting the count."""
    tree(tmp_path, {"train": {"a": [10], "b": [20]}, "test": {"a": [30], "b": [40]}})
    (tmp_path / "train" / "README.txt").write_text("hello")
    *_, classes = load_image_folder(tmp_path)
    assert classes == ["a", "b"]


def test_test_labels_follow_the_train_classes_when_a_test_class_is_absent(tmp_path: Path) -> None:
    """Train has a, b, c; test lacks b: test images of c keep label 2, not 1."""
    tree(tmp_path, {"train": {"a": [10], "b": [20], "c": [30]}, "test": {"a": [40], "c": [60]}})
    _, _, x_te, y_te, classes = load_image_folder(tmp_path)
    assert classes == ["a", "b", "c"] and first_pixels(x_te) == [40, 60] and y_te.tolist() == [0, 2]


def test_a_tree_without_images_is_one_clear_error(tmp_path: Path) -> None:
    """Class folders with no image files raise DatasetError naming the expected layout."""
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"No images under .*train \(expected .*/<class>/\*\.jpg\)"):
        load_image_folder(tmp_path)


def test_images_of_two_sizes_without_a_size_are_refused(tmp_path: Path) -> None:
    """Mixed 2x2 and 3x3 images and no size asked: DatasetError telling to give a size."""
    tree(tmp_path, {"train": {"a": [10]}, "test": {"a": [20]}})
    png(tmp_path / "train" / "a" / "9.png", 30, size=(3, 3))
    with pytest.raises(DatasetError, match="differ in size .*give the dataset a size"):
        load_image_folder(tmp_path)


def test_a_tree_without_test_is_refused_by_name(tmp_path: Path) -> None:
    """load_image_folder on a root with train/ only names the missing test folder."""
    tree(tmp_path, {"train": {"a": [10]}})
    with pytest.raises(DatasetError, match=r"No folder .*test \(expected"):
        load_image_folder(tmp_path)


def test_non_square_images_keep_height_then_width(tmp_path: Path) -> None:
    """A 4-wide, 2-high image is (3, 2, 4), with its right column where x = 3."""
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "test" / "a").mkdir(parents=True)
    for split in ("train", "test"):
        im = Image.new("RGB", (4, 2), (0, 0, 0))
        im.paste((200, 0, 0), (3, 0, 4, 2))  # the rightmost column is red
        im.save(tmp_path / split / "a" / "0.png")
    x_tr, *_ = load_image_folder(tmp_path)
    assert x_tr.shape == (1, 3, 2, 4)
    assert x_tr[0, 0, :, 3].tolist() == [200, 200] and x_tr[0, 0, :, :3].sum() == 0


# ---- channel statistics: harness/datasets/files.py ----


def test_channel_stats_of_a_constant_image_is_its_value_and_a_tiny_std() -> None:
    """All pixels 1/255: mean 1/255 and a finite std near 0 (float rounding must not make it NaN)."""
    mean, std = channel_stats(torch.full((3, 2, 5, 5), 1, dtype=torch.uint8))
    assert mean == pytest.approx((1 / 255, 1 / 255))
    assert all(0 < s < 1e-5 for s in std)


def test_channel_stats_takes_float_pixels_as_already_in_0_1() -> None:
    """Float images are not divided by 255: half of them 0.25, half 0.75 have mean 0.5 and std 0.25."""
    x = torch.cat([torch.full((2, 1, 2, 2), 0.25), torch.full((2, 1, 2, 2), 0.75)])
    mean, std = channel_stats(x, chunk=3)
    assert mean == pytest.approx((0.5,)) and std == pytest.approx((0.25,))


# ---- the decoded-dataset cache: harness/datasets/files.py ----


def _never() -> Splits:
    raise AssertionError("decoded again instead of read from the cache")


def test_a_second_load_reads_the_cache_without_decoding(tmp_path: Path) -> None:
    """The same source and tag: the second call returns the stored tensors and never calls its loader."""
    (tmp_path / "src").mkdir()
    first = cached(tmp_path / "cache", tmp_path / "src", "t", lambda: splits_of("first", 2))
    again = cached(tmp_path / "cache", tmp_path / "src", "t", _never)
    assert list(again[4]) == ["first", "first1"] and torch.equal(again[0], first[0])


def test_the_cache_is_shared_by_relative_and_absolute_spellings_of_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`data` from its parent and its absolute path are one folder, so one cache entry."""
    (tmp_path / "data").mkdir()
    cached(tmp_path / "cache", tmp_path / "data", "t", lambda: splits_of("abs"))
    monkeypatch.chdir(tmp_path)
    assert cached(tmp_path / "cache", Path("data"), "t", _never)[4] == ["abs"]
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 1


def test_a_rewritten_data_file_is_decoded_again(tmp_path: Path) -> None:
    """A file of the source, or of a folder one down (the pickles' layout), rewritten or touched, is a cache miss."""
    src = tmp_path / "src"
    (src / "cifar-10-batches-py").mkdir(parents=True)
    (src / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"a")
    (src / "labels.mat").write_bytes(b"x")
    cached(tmp_path / "cache", src, "t", lambda: splits_of("old"))
    assert cached(tmp_path / "cache", src, "t", lambda: splits_of("again"))[4] == ["old"]  # unchanged: a hit
    (src / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"bb")  # in place: no folder's mtime moves
    assert cached(tmp_path / "cache", src, "t", lambda: splits_of("new"))[4] == ["new"]
    st = (src / "labels.mat").stat()
    os.utime(src / "labels.mat", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cached(tmp_path / "cache", src, "t", lambda: splits_of("newer"))[4] == ["newer"]


def test_an_image_added_inside_a_class_folder_is_seen_after_caching(tmp_path: Path) -> None:
    """Adding train/a/2.png after a cached load gives 3 train images on the next load, not the stale 2."""
    tree(tmp_path / "d", {"train": {"a": [10, 11]}, "test": {"a": [20]}})
    before = image_folder("imagefolder32", tmp_path / "d", tmp_path / "cache", 32)[0][0]
    assert len(before) == 2
    png(tmp_path / "d" / "train" / "a" / "2.png", 12)
    after = image_folder("imagefolder32", tmp_path / "d", tmp_path / "cache", 32)[0][0]
    assert sorted(first_pixels(after)) == [10, 11, 12]


def test_one_folder_at_two_sizes_is_two_cache_entries(tmp_path: Path) -> None:
    """image_folder keys the cache by size too: 8 px then 4 px of the same tree give 8 then 4 px images."""
    tree(tmp_path / "d", {"train": {"a": [10]}, "test": {"a": [20]}})
    (big, *_), _ = image_folder("folder", tmp_path / "d", tmp_path / "cache", 8)
    (small, *_), _ = image_folder("folder", tmp_path / "d", tmp_path / "cache", 4)
    assert big.shape == (1, 3, 8, 8) and small.shape == (1, 3, 4, 4)


# ---- finding a dataset: harness/datasets/files.py, harness/datasets/sources.py ----


def test_locate_takes_the_first_candidate_holding_any_format(tmp_path: Path) -> None:
    """The first folder wins even when it holds only the second format and a later folder holds the first."""
    first, second = tmp_path / "one", tmp_path / "two"
    (first / "B").mkdir(parents=True)
    (second / "A").mkdir(parents=True)
    found = locate([first, second], [marker_format("A files", "A"), marker_format("B files", "B")], None, "t")
    assert found is not None
    splits, source = found
    assert source == first and splits[4] == ["B@one"]


def test_missing_names_a_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    """A --data-dir that is not there is said so, with every accepted format and the fix."""
    gone = tmp_path / "gone"
    err = missing("t", gone, [gone, gone / "sub"], [marker_format("A files", "A"), marker_format("B files", "B")], "do X.")
    assert str(err) == f"t: not found (--data-dir {gone} does not exist; expected A files or B files) and no internet to download it; do X."


def test_missing_lists_each_folder_looked_in_once(tmp_path: Path) -> None:
    """An existing --data-dir: the message lists the folders searched, duplicates once, in order."""
    here = tmp_path / "here"
    here.mkdir()
    err = missing("t", here, [here, here / "a", here, here / "a"], [marker_format("A files", "A")], "do X.")
    assert str(err) == f"t: not found (looked in {here}, {here / 'a'}; expected A files) and no internet to download it; do X."


def test_a_download_that_leaves_no_data_is_a_dataset_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, but the downloader wrote nothing usable: DatasetError naming the folder and the format."""
    monkeypatch.setattr(image_files, "online", lambda *a, **k: True)
    with pytest.raises(DatasetError, match=rf"t: downloaded into {tmp_path / 'new'} but found no A files there"):
        find_or_download("t", None, [tmp_path / "new"], [marker_format("A files", "A")], None, "host", lambda d: None, "fix")


def test_more_classes_than_the_dataset_has_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder with 3 classes found for a 2-class dataset is refused, as one with too few would be."""
    monkeypatch.setattr(image_files, "online", lambda *a, **k: False)
    fmt: Format = ("A files", lambda d: True, lambda d: splits_of("x", 3))
    with pytest.raises(DatasetError, match="holds 3 classes, expected 2"):
        find_or_download("t", tmp_path, [tmp_path], [fmt], None, "host", lambda d: None, "fix", classes=2)


def test_search_folders_default_to_data_then_subfolders_then_elsewhere(tmp_path: Path) -> None:
    """No --data-dir: ./data first; given one: it, its subfolders in order, then system folders last."""
    assert search_folders(None, ["a"]) == [Path("data"), Path("data") / "a"]
    assert search_folders(tmp_path, ["x", "y"], Path("/sys/share")) == [tmp_path, tmp_path / "x", tmp_path / "y", Path("/sys/share")]


def test_imagefolder_with_train_but_no_test_is_refused_with_the_layout(tmp_path: Path) -> None:
    """An ImageFolder --data-dir missing test/ gets the layout message, not a bare missing-folder error."""
    tree(tmp_path, {"train": {"a": [10]}})
    with pytest.raises(DatasetError, match=r"imagefolder32: --data-dir .* has no train/ and test/ class folders"):
        datasets.get("imagefolder32").obj(tmp_path, None)


def test_image_data_measures_mean_and_std_on_the_train_images() -> None:
    """Train all 0, test all 255: the measured mean is 0 (train), not 1 (test); given a mean alone, std is still measured."""
    x_tr, x_te = torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)
    y = torch.zeros(2, dtype=torch.long)
    found: tuple[Splits, Path] = ((x_tr, y, x_te, y, ["a"]), Path("src"))
    data = image_data("t", found, eps_linf=0.1, eps_l2=1.0)
    assert data.mean == pytest.approx((0.0,)) and data.source == "src"
    half = image_data("t", found, eps_linf=0.1, eps_l2=1.0, mean=(0.9,))
    assert half.std is not None and len(half.std) == 1 and 0 < half.std[0] < 1e-5


# ---- which checkpoint file: harness/engine/checkpoints.py ----


def test_a_relative_checkpoint_is_read_from_the_working_directory_first_then_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`c.pt` in both the working directory and the repository is the working directory's; only in the repo, the repo's."""
    repo, work = tmp_path / "repo", tmp_path / "work"
    repo.mkdir()
    work.mkdir()
    (repo / "c.pt").write_bytes(b"repo")
    (repo / "only.pt").write_bytes(b"only in repo")
    (work / "c.pt").write_bytes(b"work")
    monkeypatch.setattr(checkpoints, "REPO", repo)
    monkeypatch.chdir(work)
    assert resolve(TrainConfig(checkpoint="c.pt"), 0).sha256 == hashlib.sha256(b"work").hexdigest()
    src = resolve(TrainConfig(checkpoint="only.pt"), 0)
    assert src.path == repo / "only.pt" and src.sha256 == hashlib.sha256(b"only in repo").hexdigest()


def test_a_checkpoint_under_home_is_found_through_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~/models/c.pt` reads $HOME/models/c.pt."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "c.pt").write_bytes(b"home")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(TrainConfig(checkpoint="~/models/c.pt"), 0).sha256 == hashlib.sha256(b"home").hexdigest()


def test_a_seed_folder_resolves_to_the_seed_file_and_its_hash(tmp_path: Path) -> None:
    """A folder spec for seed 1 is folder/seed1.pt with that file's sha256, and the spec kept as written."""
    (tmp_path / "seed0.pt").write_bytes(b"zero")
    (tmp_path / "seed1.pt").write_bytes(b"one")
    src = resolve(TrainConfig(checkpoint=str(tmp_path)), 1)
    assert src == Source(str(tmp_path), tmp_path / "seed1.pt", hashlib.sha256(b"one").hexdigest())
    assert src.describe() == {"checkpoint": str(tmp_path), "file": str(tmp_path / "seed1.pt"), "sha256": src.sha256}


def test_a_missing_seed_lists_the_folders_files_sorted(tmp_path: Path, reversed_listing: None) -> None:
    """The message lists what the folder has in name order, whatever order the file system gives."""
    for name in ("a.pt", "seed1.pt", "seed0.pt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"has no seed2\.pt for seed 2 \(has: a\.pt, seed0\.pt, seed1\.pt\)"):
        resolve(TrainConfig(checkpoint=str(tmp_path)), 2)


def test_an_empty_seed_folder_says_it_has_no_pt_files(tmp_path: Path) -> None:
    """A folder without any .pt file says so instead of an empty list."""
    with pytest.raises(CheckpointError, match=r"has no seed0\.pt for seed 0 \(has: no \.pt files\); add it or drop the seed"):
        resolve(TrainConfig(checkpoint=str(tmp_path)), 0)


def test_a_grid_that_trains_has_no_checkpoint_hashes() -> None:
    """No checkpoint: every seed maps to None."""
    assert checkpoint_shas(TrainConfig(), [0, 3]) == {0: None, 3: None}


# ---- reading and fitting a state dict: harness/engine/checkpoints.py ----

MEAN, STD = (0.5,), (0.25,)


def _tiny_data() -> ImageData:
    """6 train and 4 test 8x8 grey images, 10 classes: enough for small_cnn and its clean accuracy."""
    g = torch.Generator().manual_seed(0)
    x_tr = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=g)
    x_te = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=g)
    return ImageData("digits", x_tr, torch.arange(6) % 10, x_te, torch.arange(4), [str(i) for i in range(10)], MEAN, STD)


def _small_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return architectures.get("small_cnn").obj(num_classes=10, in_channels=1)


def _job(path: Path) -> JobSpec:
    raw = {
        "datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["none"], "sparsities": [0.5], "seeds": [0],
        "train": {"checkpoint": str(path)}, "finetune": {"epochs": 1, "batch_size": 64},
        "eval": {"n_examples": 4, "batch_size": 4, "measure_latency": False, "sanity_examples": 0, "reference": {"linf": ["fgsm"]}},
        "attacks": [{"name": "fgsm", "eps": [0.1]}],
    }
    (job,) = parse_grid(raw).jobs
    return job


def _same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrap", ["model_state_dict", "module"], ids=["model_state_dict", "dataparallel"])
def test_training_script_containers_are_unwrapped(wrap: str, tmp_path: Path) -> None:
    """{'model_state_dict': sd} and DataParallel's `module.` keys load as the bare network's weights."""
    net = _small_cnn(1)
    sd = net.state_dict()
    blob = {"model_state_dict": sd} if wrap == "model_state_dict" else {f"module.{k}": v for k, v in sd.items()}
    path = tmp_path / "c.pt"
    torch.save(blob, path)
    model, _ = load_dense(_job(path), _tiny_data(), CPU)
    assert isinstance(model, Normalized) and _same(model.net.state_dict(), sd)


def test_load_dense_gives_an_eval_model_and_counts_test_examples(tmp_path: Path) -> None:
    """The dense model comes back in eval mode (BN frozen); the meta counts the 4 test images, not the 6 train ones."""
    path = tmp_path / "c.pt"
    torch.save(Normalized(_small_cnn(2), MEAN, STD).state_dict(), path)
    model, meta = load_dense(_job(path), _tiny_data(), CPU)
    assert model.training is False and all(not m.training for m in model.modules())
    assert meta["dense_test_examples"] == 4 and meta["train_seconds"] == 0.0
    assert meta["checkpoint"] == {"checkpoint": str(path), "file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        ({}, "not a state dict (a mapping of names to tensors)"),
        ({"epoch": 3, "w": torch.zeros(1)}, "not a state dict (a mapping of names to tensors)"),
        (b"", "not a plain state dict (unreadable: EOFError)"),
        (b"not torch", "not a plain state dict (unreadable: not a file torch.save wrote)"),
        (nn.Linear(2, 2), "not a plain state dict (it holds pickled objects, e.g. a whole model)"),
    ],
    ids=["empty-dict", "mixed-values", "empty-file", "junk-bytes", "whole-model"],
)
def test_what_is_no_state_dict_is_one_checkpoint_error(blob: Any, needle: str, tmp_path: Path) -> None:
    """An empty mapping, a non-tensor value, an empty or junk file, a whole model: CheckpointError saying how to save one."""
    path = tmp_path / "c.pt"
    path.write_bytes(blob) if isinstance(blob, bytes) else torch.save(blob, path)
    with pytest.raises(CheckpointError) as err:
        load_dense(_job(path), _tiny_data(), CPU)
    assert needle in str(err.value) and "torch.save(model.state_dict(), path)" in str(err.value)


def _conv_model() -> Normalized:
    torch.manual_seed(0)
    return Normalized(nn.Sequential(nn.Conv2d(1, 2, 3)), MEAN, STD)


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"0.weight": torch.zeros(3, 1, 3, 3), "0.bias": torch.zeros(2)}, "keys: 1 of another shape (e.g. 0.weight (3, 1, 3, 3) vs (2, 1, 3, 3))"),
        ({"0.weight": torch.zeros(2, 1, 3, 3)}, "keys: 1 missing (e.g. 0.bias)"),
        ({"0.weight": torch.zeros(2, 1, 3, 3), "0.bias": torch.zeros(2), "0.extra": torch.zeros(1)}, "keys: 1 unexpected (e.g. 0.extra)"),
    ],
    ids=["shape", "missing", "unexpected"],
)
def test_a_state_dict_that_does_not_fit_is_named_in_one_line(state: dict[str, Tensor], problem: str) -> None:
    """A wrong shape, a missing key or an extra key is a CheckpointError with the count and an example, not torch's traceback."""
    with pytest.raises(CheckpointError) as err:
        fit(_conv_model(), state, "checkpoint X", "tiny")
    assert f"checkpoint X is not a state dict for architecture 'tiny' ({problem})" in str(err.value)


def test_wrapper_keys_load_into_the_wrapper_with_its_mean_and_std() -> None:
    """A state dict with `net.*`, `mean`, `std` loads into the wrapper, replacing the mean and std too."""
    source = Normalized(nn.Sequential(nn.Conv2d(1, 2, 3)), (0.1,), (0.2,))
    target = _conv_model()
    fit(target, source.state_dict(), "checkpoint X", "tiny")
    assert _same(target.state_dict(), source.state_dict()) and target.mean.item() == pytest.approx(0.1)
