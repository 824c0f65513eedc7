"""The GPU suite (`pytest -m gpu`): grids, every pruner and every attack on CUDA, and same seed => same numbers.

Every test here is marked `gpu` (deselected by default) and skips cleanly where torch sees no CUDA device.
benchmarks/gpu_check.sh runs it on a lent card.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.api.config import AttackSpec, TrainConfig
from harness.api.data import ImageData, to_float
from harness.api.nets import Normalized
from harness.api.plugins import architectures, attacks, pruners
from harness.scheduling.runner import RunOptions, run
from harness.store import Store
from harness.store.queries import result_rows
from tests.conftest import TIMING

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
# Metrics that measure time, not the model: they differ between two runs of the same job.


def metric_values(db: Path) -> dict[tuple[str, str, str, float | None], float]:
    """(pruner label, metric, attack, eps) -> value for every stored result."""
    with Store(db, create=False).session() as s:
        return {(r.pruner_label, r.metric, r.attack, r.eps): r.value for r in result_rows(s)}


def run_grid(text: str, root: Path, data_dir: Path | None = None) -> dict[tuple[str, str, str, float | None], float]:
    """Run a grid on CUDA into its own DB and cache under `root`; every job must succeed."""
    root.mkdir(parents=True, exist_ok=True)
    grid = root / "grid.toml"
    grid.write_text(text)
    summary = run(RunOptions(grid=str(grid), db=root / "results.db", site_dir=None, device="cuda", data_dir=data_dir, cache_dir=root / "cache"))
    assert not summary.failed, summary.failed
    assert summary.done == summary.total
    return metric_values(root / "results.db")


def write_image_folder(root: Path, classes: int = 4, train: int = 48, test: int = 16) -> Path:
    """A CIFAR-shaped ImageFolder (32x32 RGB PNGs) whose classes differ in colour and stripe direction."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = torch.rand(3, 32, 32, generator=g) * 0.4
                img[c % 3] += 0.4
                stripes = (torch.arange(32) // 4 % 2).float() * 0.2
                img += stripes.view(1, 32, 1) if c < 2 else stripes.view(1, 1, 32)
                pixels = (img.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


ALL_ATTACKS = """
[[attacks]]
name = "fgsm"
eps = ["8/255"]

[[attacks]]
name = "pgd_linf"
eps = ["8/255"]
steps = 5

[[attacks]]
name = "pgd_l2"
eps = [0.5]
steps = 5

[[attacks]]
name = "apgd"
eps = ["8/255"]
n_iter = 10

[[attacks]]
name = "cw_l2"
eps = [0.5]
steps = 10
binary_steps = 2

[[attacks]]
name = "deepfool"
eps = [0.5]

[[attacks]]
name = "square"
eps = ["8/255"]
n_queries = 100

[[attacks]]
name = "autoattack"
eps = ["8/255"]
version = "standard"
"""

CIFAR_SHAPED = """
name = "gpu-cifar-shaped"
datasets = ["imagefolder32"]
architectures = ["resnet20"]
pruners = ["none", "l1_filter", "global_magnitude"]
sparsities = [0.5]
seeds = [0]

[train]
epochs = 3
batch_size = 32
lr = 0.05

[finetune]
epochs = 1
batch_size = 32

[eval]
n_examples = 64
batch_size = 64
""" + ALL_ATTACKS


@pytest.fixture(scope="module")
def cifar_shaped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, str, str, float | None], float]]:
    """The CIFAR-shaped grid (augmentation on) run once on CUDA: its data folder and its results."""
    root = tmp_path_factory.mktemp("cifar-shaped")
    data = write_image_folder(root / "data")
    return data, run_grid(CIFAR_SHAPED, root / "first", data)


def test_smoke_grid_on_cuda(tmp_path: Path) -> None:
    values = run_grid((Path(__file__).parent.parent / "grids" / "smoke.toml").read_text(), tmp_path)
    assert all(v > 0.5 for (_, m, _, _), v in values.items() if m == "clean_acc")
    assert all(v > 0 for (_, m, _, _), v in values.items() if m == "train_img_per_s")
    from sqlalchemy import select

    from harness.store import Job

    with Store(tmp_path / "results.db", create=False).session() as s:
        job = s.scalars(select(Job)).first()
        assert job is not None
        prov = job.provenance
    assert prov["environment"]["device"].startswith("cuda") and prov["environment"]["device_name"]
    assert prov["precision"] == {"train": "bf16", "finetune": "bf16"}  # "auto" on CUDA


def test_cifar_shaped_grid_with_augmentation_and_every_attack(cifar_shaped: tuple[Path, dict]) -> None:
    _, values = cifar_shaped
    names = {a for (_, m, a, _) in values if m == "robust_acc"}
    assert set(attacks.names()) <= names  # every registered attack ran on every job
    assert {p for (p, _, _, _) in values} == {"none", "l1_filter", "global_magnitude"}
    assert all(0.0 <= v <= 1.0 for (_, m, _, _), v in values.items() if m.endswith("acc"))


def test_same_seed_twice_same_numbers(cifar_shaped: tuple[Path, dict], tmp_path: Path) -> None:
    data, first = cifar_shaped
    second = run_grid(CIFAR_SHAPED, tmp_path / "second", data)
    model_numbers = {k: v for k, v in first.items() if not any(t in k[1] for t in TIMING)}
    assert model_numbers and model_numbers == {k: second[k] for k in model_numbers}


def test_every_pruner_on_cuda(tmp_path: Path) -> None:
    text = f"""
name = "gpu-pruners"
datasets = ["digits"]
architectures = ["resnet20"]
pruners = {sorted(pruners.names())!r}
sparsities = [0.5]
[train]
epochs = 2
batch_size = 64
lr = 0.05
[finetune]
epochs = 1
batch_size = 64
[eval]
n_examples = 100
batch_size = 100
sanity_examples = 0
[[attacks]]
name = "fgsm"
eps = [0.1]
"""
    values = run_grid(text, tmp_path)
    achieved = {p: v for (p, m, _, _), v in values.items() if m == "sparsity_achieved"}
    assert set(achieved) == set(pruners.names())
    assert all(abs(v - 0.5) < 0.15 for p, v in achieved.items() if p != "none")


def test_every_attack_on_cuda_agrees_with_the_cpu(trained_cnn: torch.nn.Module, digits: ImageData) -> None:
    """Each attack in its eps-ball on CUDA (run_attacks checks the ball), at the CPU's robust accuracy up to noise."""
    import copy

    from harness.evaluation.runs import run_attacks

    x, y = to_float(digits.x_test[:128]), digits.y_test[:128]
    on_gpu = copy.deepcopy(trained_cnn).to(CUDA)
    for name in attacks.names():
        tm = attacks.get(name).obj().threat_model
        spec = AttackSpec(name, (0.1 if tm == "linf" else 1.0,))
        gpu = run_attacks(on_gpu, x, y, (spec,), CUDA, 128, seed=0).robust[(name, spec.eps[0])].float().mean()
        if name == "square":  # a random search: its CPU and CUDA random streams differ
            continue
        cpu = run_attacks(trained_cnn, x, y, (spec,), torch.device("cpu"), 128, seed=0).robust[(name, spec.eps[0])].float().mean()
        assert abs(float(gpu) - float(cpu)) <= 0.08, (name, float(gpu), float(cpu))


def test_augmented_training_on_cuda_uses_the_cuda_generator_and_bf16() -> None:
    """The original failure: augmentation with train()'s CUDA generator. Trains, in bf16, and is reproducible."""
    from harness.training.train import train

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (512, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (512,), generator=g)
    data = ImageData("fake", x, y, x[:64], y[:64], [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3, augment=True)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Normalized(architectures.get("resnet20").obj(), data.mean, data.std).to(CUDA)
        res = train(model, data, TrainConfig(epochs=2, batch_size=128, lr=0.05), seed=0, device=CUDA)
        assert res.loss == res.loss and res.img_per_s > 0
        assert all(p.is_contiguous() for p in model.parameters())
        states.append([t.clone() for t in model.state_dict().values()])
    assert all(torch.equal(a, b) for a, b in zip(*states))


@pytest.mark.slow
def test_bf16_reaches_fp32_accuracy_on_cifar10(tmp_path: Path) -> None:
    """ResNet-20, 30 epochs on all of CIFAR-10: bf16 within 0.5 points of fp32 clean accuracy (HARNESS_CIFAR10_DIR)."""
    data_dir = os.environ.get("HARNESS_CIFAR10_DIR")
    if not data_dir:
        pytest.skip("set HARNESS_CIFAR10_DIR to a folder holding CIFAR-10")
    from harness.api.plugins import datasets
    from harness.evaluation.runs import accuracy
    from harness.training.train import train

    # HARNESS_CIFAR10_CACHE: benchmarks/gpu_check.sh shares its decoded copy rather than decoding it again.
    data = datasets.get("cifar10").obj(data_dir=Path(data_dir), cache_dir=Path(os.environ.get("HARNESS_CIFAR10_CACHE", tmp_path)))
    acc = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = Normalized(architectures.get("resnet20").obj(), data.mean, data.std).to(CUDA)
        train(model, data, TrainConfig(epochs=30, batch_size=128, lr=0.1, precision=precision), seed=0, device=CUDA)
        acc[precision] = float(accuracy(model, data.x_test, data.y_test, CUDA).float().mean())
    print(f"clean accuracy after 30 epochs: fp32 {acc['fp32']:.4f}, bf16 {acc['bf16']:.4f}")
    assert abs(acc["bf16"] - acc["fp32"]) <= 0.005, acc
