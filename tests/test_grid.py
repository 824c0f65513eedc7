"""Grid files: expansion into jobs, stable keys, one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from harness.api.errors import GridError
from harness.engine.grid import builtin_grids, load_grid, parse_grid
from tests.conftest import TINY_GRID


def tiny(**changes: object) -> dict:
    raw = tomllib.loads(TINY_GRID)
    raw.update(changes)
    return raw


def test_builtin_grids_validate() -> None:
    grids = builtin_grids()
    assert "smoke" in grids
    smoke = load_grid("smoke")
    # none and the control have no sparsity axis: 2 archs x (1 baseline + 1 control + 2 pruners x 2 sparsities).
    assert len(smoke.jobs) == 12
    assert {j.dataset for j in smoke.jobs} == {"digits"}


def test_expansion_and_baseline() -> None:
    g = parse_grid(tiny(sparsities=[0.25, 0.5], seeds=[0, 1]))
    assert len(g.jobs) == 2 * (1 + 2)
    assert all(j.sparsity == 0.0 for j in g.jobs if j.pruner.name == "none")


def test_keys_are_stable_and_shared() -> None:
    a, b = parse_grid(tiny()), parse_grid(tiny())
    assert [j.key for j in a.jobs] == [j.key for j in b.jobs]
    # Every pruner of one (dataset, architecture, seed) shares the dense model.
    assert len({j.dense_key for j in a.jobs}) == 1
    assert len({j.key for j in a.jobs}) == len(a.jobs)
    changed = parse_grid(tiny(train={"epochs": 3}))
    assert changed.jobs[0].dense_key != a.jobs[0].dense_key


def test_strength_rule_needs_the_reference_at_every_eps() -> None:
    """A grid that reports an eps its reference attack does not run at is refused with a one-line fix."""
    raw = tiny(attacks=[{"name": "fgsm", "eps": [0.05, 0.1]}, {"name": "pgd_linf", "eps": [0.1]}])
    with pytest.raises(GridError, match=r"'fgsm' runs at linf eps 0.05 where no reference attack \(pgd_linf\) runs"):
        parse_grid(raw)
    default = tiny(attacks=[{"name": "pgd_linf", "eps": [0.1]}])
    del default["eval"]["reference"]
    with pytest.raises(GridError, match=r"no reference attack \(autoattack\)"):
        parse_grid(default)
    # An L2 attack is covered by an L2 reference only, whatever runs under Linf at the same number.
    l2 = tiny(attacks=[{"name": "pgd_l2", "eps": [0.5]}, {"name": "apgd", "eps": [0.5], "norm": "linf"}])
    l2["eval"]["reference"] = {"linf": ["apgd"]}
    with pytest.raises(GridError, match=r"'pgd_l2' runs at l2 eps 0.5.*\(apgd or autoattack\)"):
        parse_grid(l2)
    l2["attacks"][1]["norm"] = "l2"
    assert len(parse_grid(l2).jobs) == 2  # APGD-L2 at 0.5 covers PGD-L2 at 0.5


def test_bad_reference_table() -> None:
    raw = tiny()
    raw["eval"]["reference"] = {"l3": ["apgd"]}
    with pytest.raises(GridError, match="unknown threat model 'l3'"):
        parse_grid(raw)


def test_control_has_no_sparsity_axis() -> None:
    g = parse_grid(tiny(pruners=["none", "dense_finetuned", "l1_filter"], sparsities=[0.25, 0.5]))
    control = [j for j in g.jobs if j.pruner.name == "dense_finetuned"]
    assert len(control) == 1 and control[0].sparsity == 0.0
    # The control's key holds the fine-tuning budget: a different budget is a different control.
    other = parse_grid(tiny(pruners=["dense_finetuned"], finetune={"epochs": 5, "batch_size": 32}))
    assert other.jobs[0].pruned_key != control[0].pruned_key


def test_eps_fractions() -> None:
    raw = tiny(attacks=[{"name": "pgd_linf", "eps": ["8/255", 0.1]}])
    g = parse_grid(raw)
    assert g.jobs[0].attacks[0].eps == (8 / 255, 0.1)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"pruners": ["none", "l1_filtr"]}, "Unknown pruner 'l1_filtr'. Did you mean: l1_filter"),
        ({"architectures": ["resnet21"]}, "Unknown architecture 'resnet21'"),
        ({"datasets": ["imagenet"]}, "Unknown dataset 'imagenet'"),
        ({"attacks": [{"name": "fgsm"}]}, "needs 'eps'"),
        ({"attacks": [{"name": "fgsm", "eps": ["8/x"]}]}, "not a number"),
        ({"attacks": [{"name": "pgd_linf", "eps": [0.1], "stepz": 3}]}, "bad parameters for 'pgd_linf'"),
        ({"sparsities": [1.5]}, "'sparsities' values must be numbers in [0, 1)"),
        ({"seeds": ["a"]}, "'seeds' must be"),
        ({"train": {"epochz": 1}}, "unknown key [train].epochz; accepted keys: epochs"),
        ({"colour": "blue"}, "unknown key 'colour'; accepted keys:"),
        ({"pruners": [{"name": "l1_filter", "schedule": "sometimes"}]}, "schedule must be"),
    ],
)
def test_bad_grids_name_the_problem(changes: dict, needle: str) -> None:
    with pytest.raises(GridError) as info:
        parse_grid(tiny(**changes))
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_required_key() -> None:
    raw = tiny()
    del raw["attacks"]
    with pytest.raises(GridError, match="missing required key 'attacks'"):
        parse_grid(raw)


def test_unknown_grid_name_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="Unknown grid 'smok'. Did you mean: smoke"):
        load_grid("smok")
    bad = tmp_path / "bad.toml"
    bad.write_text("datasets = [\n")
    with pytest.raises(GridError, match="not valid TOML"):
        load_grid(str(bad))
    with pytest.raises(GridError, match="does not exist"):
        load_grid(str(tmp_path / "nope.toml"))


def test_match_option() -> None:
    g = parse_grid(tiny(pruners=["none", "dense_finetuned", "l1_filter"], match="macs"))
    assert {j.pruner.name: j.match for j in g.jobs} == {"none": "", "dense_finetuned": "", "l1_filter": "macs"}
    assert g.jobs[-1].pruned_params()["match"] == "macs"
    with pytest.raises(GridError, match="needs structured pruners, but 'global_magnitude'"):
        parse_grid(tiny(pruners=["global_magnitude"], match="macs"))
    with pytest.raises(GridError, match="unknown match 'flops'"):
        parse_grid(tiny(match="flops"))
