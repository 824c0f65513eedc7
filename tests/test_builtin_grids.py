"""Built-in grid files: each validates against the registry, and the paper grids hold the paper's setup."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from harness.api.plugins import architectures, attacks, datasets, pruners
from harness.api.registry import Registry
from harness.engine.grid import builtin_grids, load_grid


def _missing_plugins(name: str) -> list[str]:
    """Plugins a grid names that are not registered."""
    raw = tomllib.loads(builtin_grids()[name].read_text())
    wanted = [(pruners, p if isinstance(p, str) else p["name"]) for p in raw["pruners"]]
    wanted += [(attacks, a["name"]) for a in raw["attacks"]]
    wanted += [(architectures, a) for a in raw["architectures"]] + [(datasets, d) for d in raw["datasets"]]
    return [f"{reg.kind} {n}" for reg, n in wanted if n not in reg]


def _builtin(registry: Registry, folder: str) -> set[str]:
    """Names shipped with the harness: registered in registry/<folder>/, coded there or in harness/ (not submissions or third-party plugins)."""
    root = Path(__file__).resolve().parent.parent
    shipped = (root / "registry" / folder, root / "harness")
    return {e.name for e in registry.entries() if any(Path(e.source).resolve().is_relative_to(d) for d in shipped)}


@pytest.mark.parametrize("name", sorted(builtin_grids()))
def test_builtin_grid_validates(name: str) -> None:
    """Every plugin a built-in grid names is shipped, and the grid validates (strength rule included)."""
    assert not _missing_plugins(name), f"grid {name} names unregistered plugins"
    grid = load_grid(name)
    assert grid.jobs and grid.name == name


@pytest.mark.parametrize("name", sorted(builtin_grids()))
def test_grids_with_pruned_rows_have_the_control(name: str) -> None:
    """The fine-tuned dense control is in every grid that prunes, so every pruned row has its reference row."""
    grid = load_grid(name)
    families = {pruners.get(j.pruner.name).obj.family for j in grid.jobs}
    if families - {"none", "control"}:
        assert "dense_finetuned" in {j.pruner.name for j in grid.jobs}


def test_paper_grid_is_the_papers_setup() -> None:
    grid = load_grid("paper")
    assert grid.datasets == ["cifar10"]
    assert {j.architecture for j in grid.jobs} == {"vgg16_bn", "resnet56", "mobilenetv2"}
    assert {j.pruner.name for j in grid.jobs} == {"none", "dense_finetuned", "l1_filter", "hrank", "expected_abs", "kl_divergence", "pls_vip"}
    fgsm = next(a for a in grid.jobs[0].attacks if a.name == "fgsm")
    assert 8 / 255 in fgsm.eps and all(j.train.regime == "standard" for j in grid.jobs)
    assert {a.name for a in grid.jobs[0].attacks} >= {"pgd_linf", "autoattack"}


def test_layer_and_defense_grids_share_the_paper_settings() -> None:
    paper, layers, defenses = load_grid("paper"), load_grid("paper-layers"), load_grid("paper-defenses")
    assert {pruners.get(j.pruner.name).obj.family for j in layers.jobs} == {"none", "control", "layer"}
    # Same dense models as the filter grid (trained once, shared through the cache) ...
    assert {j.dense_key for j in layers.jobs} <= {j.dense_key for j in paper.jobs}
    # ... while the defenses train adversarially under the same attacks.
    assert all(j.train.regime == "pgd_at" and j.train.adv_eps == pytest.approx(8 / 255) for j in defenses.jobs)
    assert defenses.jobs[0].attacks == paper.jobs[0].attacks


def test_full_grid_covers_every_pruner_and_attack() -> None:
    used = {j.pruner.name for g in ("full", "full-layers") for j in load_grid(g).jobs}
    assert used == _builtin(pruners, "pruners")
    assert {a.name for a in load_grid("full").jobs[0].attacks} == _builtin(attacks, "attacks")


def test_cifar_cpu_grid_is_cpu_sized() -> None:
    grid = load_grid("cifar-cpu")
    assert {j.architecture for j in grid.jobs} == {"resnet20"} and len({j.seed for j in grid.jobs}) >= 2
    assert all(j.train.n_train and j.train.n_train <= 10000 for j in grid.jobs)
