"""Tests written against surviving config and grid mutants: what a grid may hold, what it expands to, and its keys.

Pins harness/api/config.py (validation of [train], [finetune] and [eval], eps parsing, key material, device
resolution) and harness/engine/grid.py (grid-level validation, bounds, duplicate notes, job order and keys). Every
expected value is written by hand from the documented rule (an error's wording, a bound, an order); grids are tiny
dicts naming the built-in digits dataset and small_cnn, parsed without loading any data, no GPU, no network.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.api.config import (
    EvalConfig,
    FinetuneConfig,
    JobSpec,
    PrunerSpec,
    TrainConfig,
    for_device,
    parse_eps,
)
from harness.api.errors import GridError
from harness.engine import grid as grid_module
from harness.engine.grid import MAX_JOBS, builtin_grids, check_bounds, parse_grid, read_grid_file

# ---- helpers ----


def grid(**changes: Any) -> dict[str, Any]:
    """A one-dataset, one-architecture grid (dense baseline + l1_filter at 0.5, seed 0, FGSM as its own reference)."""
    raw: dict[str, Any] = {
        "datasets": ["digits"],
        "architectures": ["small_cnn"],
        "pruners": ["none", "l1_filter"],
        "sparsities": [0.5],
        "seeds": [0],
        "eval": {"reference": {"linf": ["fgsm"]}},
        "attacks": [{"name": "fgsm", "eps": [0.1]}],
    }
    raw.update(changes)
    return raw


def refused(raw: dict[str, Any], needle: str) -> str:
    """parse_grid refuses `raw` with a one-line GridError holding `needle`; the message."""
    with pytest.raises(GridError) as info:
        parse_grid(raw)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message
    return message


def job(train: TrainConfig | None = None, pruner: str = "l1_filter", sha: str | None = None, **kw: Any) -> JobSpec:
    """A digits/small_cnn job with the given training config, built directly (no grid)."""
    fields: dict[str, Any] = {"finetune": FinetuneConfig(), "eval": EvalConfig(), "attacks": ()} | kw
    return JobSpec("digits", "small_cnn", 0, PrunerSpec(pruner), 0.0 if pruner == "none" else 0.5, train or TrainConfig(),
                   checkpoint_sha256=sha, **fields)


# ---- [train] / [finetune] / [eval] values: types and bounds ----


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"epochs": True}, "[train]: epochs must be an integer >= 0, got True"),
        ({"lr": 0}, "[train]: lr must be a number > 0, got 0"),
        ({"lr": True}, "[train]: lr must be a number > 0, got True"),
        ({"momentum": float("inf")}, "[train]: momentum must be a number >= 0, got inf"),
        ({"momentum": -0.1}, "[train]: momentum must be a number >= 0, got -0.1"),
        ({"weight_decay": -1e-4}, "[train]: weight_decay must be a number >= 0, got -0.0001"),
        ({"warmup_epochs": -1}, "[train]: warmup_epochs must be a number >= 0, got -1"),
        ({"schedule": "linear"}, "[train]: unknown schedule 'linear'; accepted: cosine, onecycle"),
        ({"n_train": 0}, "[train]: n_train must be an integer >= 1, got 0"),
        ({"regime": "pgd_at", "adv_steps": True}, "[train]: adv_steps must be an integer >= 1, got True"),
        ({"regime": "trades", "trades_beta": -1.0}, "[train]: trades_beta must be a number >= 0, got -1.0"),
        ({"checkpoint": ""}, "[train]: checkpoint must be a path or 'robustbench:DATASET/THREAT/NAME', got ''"),
        ({"model_dir": "models"}, "[train]: model_dir applies only to checkpoint = 'robustbench:...'"),
    ],
)
def test_bad_train_values_are_refused_with_the_rule(kwargs: dict[str, Any], needle: str) -> None:
    """Each out-of-range or mistyped [train] value (bools are not numbers) is a GridError stating the rule and the value."""
    with pytest.raises(GridError) as info:
        TrainConfig(**kwargs)
    assert needle in str(info.value)


def test_boundary_train_values_are_accepted() -> None:
    """The bounds are inclusive where documented: 0 epochs, batch 1, momentum/decay/warm-up 0, TRADES beta 0."""
    cfg = TrainConfig(epochs=0, batch_size=1, momentum=0.0, weight_decay=0.0, warmup_epochs=0, n_train=1, regime="trades",
                      adv_steps=1, trades_beta=0.0)
    assert (cfg.epochs, cfg.batch_size, cfg.n_train, cfg.adv_steps, cfg.trades_beta) == (0, 1, 1, 1, 0.0)


def test_finetune_errors_name_the_finetune_section() -> None:
    """[finetune] shares [train]'s rules, and its errors say [finetune], not [train]."""
    with pytest.raises(GridError, match=r"^\[finetune\]: epochs must be an integer >= 0, got -1\.$"):
        FinetuneConfig(epochs=-1)
    refused(grid(finetune={"momentum": -1}), "[finetune]: momentum must be a number >= 0, got -1")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_examples": 0}, "[eval]: n_examples must be an integer >= 1, got 0"),
        ({"channels_last": 1}, "[eval]: channels_last must be true or false, got 1"),
        ({"reference": {"l2": []}}, "[eval] reference.l2 must be an attack name or a non-empty list of names."),
        ({"reference": {"l2": ["apgd", 3]}}, "[eval] reference.l2 must be an attack name or a non-empty list of names."),
    ],
)
def test_bad_eval_values_are_refused_with_the_rule(kwargs: dict[str, Any], needle: str) -> None:
    """An [eval] value outside its rule (an int for a bool, an empty or non-name reference list) is a GridError."""
    with pytest.raises(GridError) as info:
        EvalConfig(**kwargs)
    assert needle in str(info.value)


# ---- the reference table ----


def test_reference_table_order_does_not_change_the_config_or_the_key() -> None:
    """{linf, l2} and {l2, linf} are one reference table: stored sorted by threat model, so jobs keep one key."""
    ab = EvalConfig(reference={"linf": ["fgsm"], "l2": ["apgd"]})  # type: ignore[arg-type]
    ba = EvalConfig(reference={"l2": ["apgd"], "linf": ["fgsm"]})  # type: ignore[arg-type]
    assert ab.reference == ba.reference == (("l2", ("apgd",)), ("linf", ("fgsm",)))
    one = parse_grid(grid(eval={"reference": {"linf": ["fgsm"], "l2": ["apgd"]}}))
    other = parse_grid(grid(eval={"reference": {"l2": ["apgd"], "linf": ["fgsm"]}}))
    assert [j.key for j in one.jobs] == [j.key for j in other.jobs]


def test_a_reference_given_as_one_name_is_that_one_attack() -> None:
    """`reference.l2 = "apgd"` means the attack apgd, not the letters a, p, g, d."""
    assert EvalConfig(reference={"l2": "apgd"}).references()["l2"] == ("apgd",)  # type: ignore[arg-type]


def test_a_grids_reference_replaces_the_default_for_its_threat_model_only() -> None:
    """references(): the grid's choice wins where given; the other threat model keeps the default (Croce & Hein)."""
    cfg = EvalConfig(reference={"l2": ["pgd_l2"]})  # type: ignore[arg-type]
    assert cfg.references() == {"linf": ("autoattack",), "l2": ("pgd_l2",)}


# ---- key material ----


def test_an_attacks_parameters_are_part_of_the_job_key_only() -> None:
    """Other attack parameters are another evaluation (new job key) of the same models (same dense and pruned keys)."""
    two = parse_grid(grid(attacks=[{"name": "fgsm", "eps": [0.1]}, {"name": "pgd_linf", "eps": [0.1], "steps": 2}])).jobs[-1]
    three = parse_grid(grid(attacks=[{"name": "fgsm", "eps": [0.1]}, {"name": "pgd_linf", "eps": [0.1], "steps": 3}])).jobs[-1]
    assert two.key != three.key
    assert (two.dense_key, two.pruned_key) == (three.dense_key, three.pruned_key)
    assert two.params()["attacks"][1] == {"name": "pgd_linf", "eps": [0.1], "params": {"steps": 2}}


def test_pruner_label_lists_parameters_sorted_by_name_whatever_the_grid_order() -> None:
    """A pruner table's parameters are stored sorted by name, and its label reads name(key=value, ...)."""
    for table in ({"name": "l1_filter", "steps": 2, "schedule": "iterative"}, {"name": "l1_filter", "schedule": "iterative", "steps": 2}):
        (spec,) = {j.pruner for j in parse_grid(grid(pruners=[table])).jobs}
        assert spec.params == (("schedule", "iterative"), ("steps", 2))
        assert spec.label == "l1_filter(schedule=iterative, steps=2)"


def test_a_given_checkpoint_is_keyed_by_its_content_not_by_its_model_folder() -> None:
    """The same robustbench model read from two folders is one dense model: model_dir is not key material."""
    here = job(TrainConfig(checkpoint="robustbench:cifar10/Linf/Standard", model_dir="/a"), sha="ab" * 32)
    there = job(TrainConfig(checkpoint="robustbench:cifar10/Linf/Standard", model_dir="/b"), sha="ab" * 32)
    assert here.dense_key == there.dense_key
    assert "model_dir" not in here.dense_params()["train"]
    assert here.dense_params()["train"]["checkpoint"] == "sha256:" + "ab" * 32


def test_the_dense_baseline_key_holds_no_sparsity_and_no_fine_tuning() -> None:
    """The untouched dense model is not fine-tuned: another [finetune] budget leaves its job key alone."""
    short = job(pruner="none")
    long = job(pruner="none", finetune=FinetuneConfig(epochs=7))
    assert short.key == long.key and short.pruned_key == long.pruned_key
    assert "sparsity" not in short.pruned_params() and "finetune" not in short.pruned_params()


def test_a_grid_without_match_keeps_match_out_of_the_key() -> None:
    """Without `match`, a pruned job's key material has no 'match' entry (keys made before the option stay valid)."""
    (pruned,) = [j for j in parse_grid(grid()).jobs if j.pruner.name == "l1_filter"]
    assert pruned.match == "" and "match" not in pruned.pruned_params()


def test_for_device_resolves_each_stage_from_its_own_precision() -> None:
    """[train] bf16 and [finetune] auto on the CPU: training stays bf16, fine-tuning becomes fp32."""
    cpu = for_device(job(TrainConfig(precision="bf16"), finetune=FinetuneConfig(precision="auto")), "cpu")
    assert (cpu.train.precision, cpu.finetune.precision) == ("bf16", "fp32")
    cuda = for_device(job(TrainConfig(precision="fp32"), finetune=FinetuneConfig(precision="auto")), "cuda")
    assert (cuda.train.precision, cuda.finetune.precision) == ("fp32", "bf16")


# ---- eps parsing ----


def test_eps_fractions_may_hold_spaces() -> None:
    """'8 / 255' reads as 8/255."""
    assert parse_eps(" 8 / 255 ", "w") == 8 / 255


@pytest.mark.parametrize(("value", "needle"), [(True, "must be a number or a fraction"), ("1/0", "is not a number or a fraction")])
def test_eps_that_is_a_bool_or_divides_by_zero_is_a_grid_error(value: Any, needle: str) -> None:
    """`true` is not an eps of 1, and '1/0' is a GridError, not a ZeroDivisionError."""
    with pytest.raises(GridError, match=needle):
        parse_eps(value, "w")


# ---- the grid file ----


def test_a_grid_file_of_exactly_the_size_limit_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The size bound is inclusive: a file of MAX_GRID_BYTES bytes is read, one byte more is refused unread."""
    text = 'name = "g"\n'
    path = tmp_path / "g.toml"
    path.write_text(text)
    monkeypatch.setattr(grid_module, "MAX_GRID_BYTES", len(text))
    assert read_grid_file(path) == {"name": "g"}
    path.write_text(text + "\n")
    with pytest.raises(GridError, match="a grid file may be at most"):
        read_grid_file(path)


def test_builtin_grids_are_listed_in_file_name_order() -> None:
    """Built-in grids come in the sorted order of their files (the order every error message lists them in)."""
    files = list(builtin_grids().values())
    assert files == sorted(files) and "smoke" in builtin_grids()


# ---- grid-level validation ----


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"datasets": []}, "'datasets' must be a non-empty list of names."),
        ({"datasets": ["digits", 3]}, "'datasets' must be a non-empty list of names."),
        ({"datasets": "digits"}, "'datasets' must be a list, got str."),
        ({"pruners": [{"steps": 2}]}, "each 'pruners' entry must be a name or a table with a 'name'."),
        ({"seeds": []}, "'seeds' must be a non-empty list of integers."),
        ({"seeds": [True]}, "'seeds' must be a non-empty list of integers."),
        ({"attacks": [{"name": "pgd_l2", "eps": [0]}], "eval": {"reference": {"l2": ["pgd_l2"]}}}, "attack 'pgd_l2' eps 0 must be positive."),
    ],
)
def test_bad_grids_are_refused_with_the_rule(changes: dict[str, Any], needle: str) -> None:
    """An empty or mistyped axis, a nameless pruner table and a zero L2 eps are one-line GridErrors."""
    refused(grid(**changes), needle)


def test_boundary_grid_values_are_accepted() -> None:
    """Sparsity 0 and Linf eps 1 are inside [0, 1) and (0, 1]; a scalar eps is a one-eps list."""
    g = parse_grid(grid(pruners=["l1_filter"], sparsities=[0.0], attacks=[{"name": "fgsm", "eps": 1.0}]))
    assert [(j.sparsity, j.attacks[0].eps) for j in g.jobs] == [(0.0, (1.0,))]


def test_a_dense_only_grid_needs_no_sparsities() -> None:
    """With only the dense baseline, an empty sparsity list runs that baseline (it has no sparsity axis)."""
    assert [(j.pruner.name, j.sparsity) for j in parse_grid(grid(pruners=["none"], sparsities=[])).jobs] == [("none", 0.0)]


def test_an_l2_apgd_is_bounded_as_l2() -> None:
    """APGD given norm = 'l2' is checked against the L2 rule (eps > 0), so eps 1.5 is allowed, as Linf would not be."""
    g = parse_grid(grid(pruners=["none"], attacks=[{"name": "apgd", "norm": "l2", "eps": [1.5]}], eval={}))
    assert g.jobs[0].attacks[0].eps == (1.5,)
    refused(grid(pruners=["none"], attacks=[{"name": "apgd", "eps": [1.5]}], eval={}), "(Linf) eps 1.5 is outside (0, 1]")


def test_parsing_leaves_the_grid_tables_as_written() -> None:
    """parse_grid reads the pruner and attack tables without popping their names: the same dict parses twice alike."""
    raw = grid(pruners=["none", {"name": "l1_filter", "steps": 1}], attacks=[{"name": "fgsm", "eps": [0.1]}])
    before = copy.deepcopy(raw)
    first = [j.key for j in parse_grid(raw).jobs]
    assert raw == before
    assert [j.key for j in parse_grid(raw).jobs] == first


# ---- duplicates and notes ----


def test_a_grid_without_repeats_has_no_notes() -> None:
    """No duplicate entry, no note."""
    assert parse_grid(grid()).notes == []


def test_a_note_names_only_the_repeated_entries() -> None:
    """Listing 'none' twice gives one note naming 'none' (and not 'l1_filter'), and one baseline job."""
    g = parse_grid(grid(pruners=["none", "l1_filter", "none"]))
    assert g.notes == ["'pruners' lists 'none' more than once; each is run once."]
    assert [j.pruner.name for j in g.jobs] == ["none", "l1_filter"]


def test_a_repeated_dataset_is_noted() -> None:
    """A dataset listed twice is run once and the grid says so."""
    g = parse_grid(grid(datasets=["digits", "digits"]))
    assert g.notes == ["'datasets' lists 'digits' more than once; each is run once."]
    assert len(g.jobs) == 2


# ---- the job bound, counted without expanding ----


def test_the_job_count_uses_one_sparsity_when_none_are_listed() -> None:
    """No 'sparsities' key means [0.5]: 100,001 seeds of one pruner are 100,001 jobs, over the bound."""
    assert MAX_JOBS == 100_000
    raw = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["l1_filter"], "seeds": tuple(range(100_001))}
    with pytest.raises(GridError, match="expands to 100,001 jobs"):
        check_bounds(raw, "grid")


def test_the_job_count_uses_one_seed_when_none_are_listed() -> None:
    """No 'seeds' key means [0]: 100,001 sparsities of one pruner are 100,001 jobs, over the bound."""
    raw = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["l1_filter"], "sparsities": tuple(i / 100_001 for i in range(100_001))}
    with pytest.raises(GridError, match="expands to 100,001 jobs"):
        check_bounds(raw, "grid")


# ---- job order and names ----


def test_dense_rows_come_first_and_seeds_are_innermost() -> None:
    """Dense baseline first whatever the listed order; then each sparsity with all its seeds before the next."""
    g = parse_grid(grid(pruners=["l1_filter", "none"], sparsities=[0.25, 0.5], seeds=[0, 1]))
    assert [(j.pruner.name, j.sparsity, j.seed) for j in g.jobs] == [
        ("none", 0.0, 0), ("none", 0.0, 1),
        ("l1_filter", 0.25, 0), ("l1_filter", 0.25, 1), ("l1_filter", 0.5, 0), ("l1_filter", 0.5, 1),
    ]


def test_datasets_are_listed_in_the_grids_order() -> None:
    """Grid.datasets follows first use (the grid's order), not the alphabet."""
    assert parse_grid(grid(datasets=["digits", "cifar10"], pruners=["none"])).datasets == ["digits", "cifar10"]


def test_the_grid_name_comes_from_the_file_when_it_gives_one() -> None:
    """`name = ...` in the grid wins over the file's stem; without it the stem is the name."""
    assert parse_grid(grid(name="mine"), name="stem").name == "mine"
    assert parse_grid(grid(), name="stem").name == "stem"


# ---- bugs these tests found: overflowing numbers, a reference that is no table, the dense control in the job bound ----


def test_an_overflowing_eps_in_a_grid_is_a_grid_error() -> None:
    """`eps = ['1e400']` is refused as a GridError (one line), not an OverflowError traceback."""
    refused(grid(attacks=[{"name": "fgsm", "eps": ["1e400"]}]), "eps")


def test_an_overflowing_integer_lr_is_a_grid_error() -> None:
    """`lr = <a 400-digit integer>` (valid TOML) is refused as a GridError, not an OverflowError traceback."""
    refused(grid(train={"lr": 10**400}), "lr must be a number > 0")


@pytest.mark.parametrize("reference", ["autoattack", ["linf"]])
def test_a_reference_that_is_not_a_table_is_a_grid_error(reference: Any) -> None:
    """`[eval] reference = "autoattack"` (a name, not a table) is a one-line GridError, not a ValueError traceback."""
    refused(grid(eval={"reference": reference}), "reference")


def test_the_dense_control_counts_once_per_seed_in_the_job_bound() -> None:
    """100 seeds x (baseline + control + 500 sparsities) is 50,200 jobs, within the bound; check_bounds says 100,100."""
    raw = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["none", "dense_finetuned", "l1_filter"],
           "seeds": list(range(100)), "sparsities": [i / 1000 for i in range(500)]}
    check_bounds(raw, "grid")


class CountingInt(int):
    """An int that counts the equality tests made on it (all instances share one counter)."""

    calls = 0

    def __eq__(self, other: object) -> bool:
        CountingInt.calls += 1
        return int(self) == other

    __hash__ = int.__hash__


def test_collapsing_duplicates_is_not_quadratic() -> None:
    """Deduplicating 400 distinct seeds takes far fewer than 400^2/2 comparisons (the bound must refuse a big grid fast)."""
    CountingInt.calls = 0
    raw = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["none"], "seeds": [CountingInt(i) for i in range(400)]}
    check_bounds(raw, "grid")
    assert CountingInt.calls < 20 * 400, CountingInt.calls
