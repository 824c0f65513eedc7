"""Shared fixtures: real tiny data (scikit-learn digits), a quickly trained small model, temporary stores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.api.config import TrainConfig
from harness.api.data import ImageData
from harness.api.nets import Normalized
from harness.api.plugins import architectures, datasets
from harness.store.session import Store
from harness.training.train import train

# Two threads per test process: the suite runs on 2-core machines.
torch.set_num_threads(2)

# Metrics that measure time, not the model: left out wherever two runs must give the same numbers.
TIMING = ("_seconds", "latency_ms", "img_per_s")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps CLI output at 80 columns off a terminal, so a message holding a temporary path breaks where the
    path's length says (pytest-9 vs pytest-10): tests read messages whole, one line each."""
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture(scope="session")
def digits() -> ImageData:
    """The embedded digits dataset (1,437 train / 360 test 8x8 images)."""
    return datasets.get("digits").obj()


@pytest.fixture(scope="session")
def trained_cnn(digits: ImageData) -> torch.nn.Module:
    """small_cnn trained for a few epochs on digits (~97% clean accuracy), in eval mode."""
    torch.manual_seed(0)
    net = architectures.get("small_cnn").obj(num_classes=10, in_channels=1)
    model = Normalized(net, digits.mean, digits.std)
    train(model, digits, TrainConfig(epochs=8, batch_size=64, lr=0.05), seed=0, device=torch.device("cpu"))
    return model.eval()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh results database."""
    return Store(tmp_path / "results.db")


TINY_GRID = """
name = "tiny"
description = "four-epoch digits grid for tests"
datasets = ["digits"]
architectures = ["small_cnn"]
pruners = ["none", "l1_filter"]
sparsities = [0.5]
seeds = [0]

[train]
epochs = 4
batch_size = 32
lr = 0.05
n_train = 800

[finetune]
epochs = 1
batch_size = 32

[eval]
n_examples = 100
batch_size = 100
measure_latency = false
sanity_examples = 0   # sanity checks that need extra attack runs are covered by tests/test_sanity.py
reference = { linf = ["pgd_linf"] }   # AutoAttack is too slow for a test grid; PGD is this grid's declared reference

[[attacks]]
name = "fgsm"
eps = [0.1]

[[attacks]]
name = "pgd_linf"
eps = [0.1]
steps = 3
"""


@pytest.fixture
def tiny_grid(tmp_path: Path) -> Path:
    """A grid file that runs in a few seconds."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_GRID)
    return path
