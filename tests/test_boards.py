"""Golden tests for the leaderboards behind the site: a hand-made store -> expected boards, rows, ranks and intervals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from harness.api.metrics import Metric
from harness.store.boards import WORST, baseline_index, baseline_of, leaderboards
from harness.store.queries import job_records, result_rows, status_counts
from harness.store.session import Store
from harness.store.statistics import Estimate, t_quantile

FAMILIES = {"none": "none", "p1": "filter", "p2": "layer"}
THREATS = {"fgsm": "linf", "pgd_l2": "l2", "autoattack": "linf"}
# Two-sided 95% Student-t critical value with one degree of freedom (statistics tables).
T1 = 12.706204736


def job_params(dataset: str, arch: str, seed: int, pruner: str, sparsity: float, n_examples: int = 100) -> dict[str, Any]:
    """Job parameters shaped like JobSpec.params(), enough for setups and baseline pairing."""
    dense = {"dataset": dataset, "architecture": arch, "seed": seed, "train": {"epochs": 1}}
    pruned: dict[str, Any] = {"dense": dense, "pruner": pruner, "pruner_params": {}}
    if pruner != "none":
        pruned |= {"sparsity": sparsity, "finetune": {"epochs": 1}}
    return {"pruned": pruned, "eval": {"n_examples": n_examples}, "attacks": [{"name": "fgsm", "eps": [0.1, 0.2], "params": {}}]}


def add_job(
    store: Store,
    key: str,
    pruner: str,
    sparsity: float,
    seed: int,
    metrics: list[Metric],
    *,
    dataset: str = "d",
    arch: str = "a",
    label: str | None = None,
    n_examples: int = 100,
    provenance: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    dense_key: str | None = None,
    grid: str = "golden",
) -> None:
    """Record one done job through the Store API, as the runner does, in a run of `grid`."""
    run = store.start_run(grid, "<memory>", 1, {})
    fields = {
        "dataset": dataset, "architecture": arch, "pruner": pruner, "pruner_label": label or pruner,
        "sparsity": sparsity, "seed": seed, "dense_key": dense_key or f"dense-{dataset}-{arch}-{seed}", "pruned_key": f"pruned-{key}",
        "params": params or job_params(dataset, arch, seed, pruner, sparsity, n_examples),
    }
    store.claim(key, run, fields)
    store.complete(key, metrics, provenance or {}, 1.0)


def linf(clean: float, fgsm: tuple[float, ...], params_ratio: float = 1.0, flags: dict[str, float] | None = None) -> list[Metric]:
    """Metrics of a job attacked by FGSM at eps 0.1 and 0.2 (worst case = FGSM, the only Linf attack)."""
    out = [Metric("clean_acc", clean), Metric("clean_acc_eval", clean), Metric("params_ratio", params_ratio)]
    for eps, acc in zip((0.1, 0.2), fgsm):
        out += [Metric("robust_acc", acc, "fgsm", eps), Metric("worst_case_acc", acc, "linf", eps)]
    out += [Metric(f"flag_{k}", v) for k, v in (flags or {}).items()]
    return out


@pytest.fixture
def golden(tmp_path: Path) -> Store:
    """Two seeds of dense / p1@0.5 / p2@0.5 on one architecture, plus a clean-only job and a failed one."""
    store = Store(tmp_path / "golden.db")
    add_job(store, "n0", "none", 0.0, 0, linf(0.90, (0.40, 0.20)))
    add_job(store, "n1", "none", 0.0, 1, linf(0.92, (0.44, 0.20)))
    add_job(store, "a0", "p1", 0.5, 0, linf(0.88, (0.50, 0.30), 0.5, {"gradient_masking": 1.0}))
    add_job(store, "a1", "p1", 0.5, 1, linf(0.88, (0.52, 0.26), 0.5, {"gradient_masking": 0.0}))
    add_job(store, "b0", "p2", 0.5, 0, linf(0.91, (0.30, 0.10), 0.4))
    add_job(store, "b1", "p2", 0.5, 1, linf(0.93, (0.34, 0.10), 0.4))
    # An L2-only job of p1: its own (dataset, threat model) board, compared against no dense L2 result.
    add_job(store, "l2", "p1", 0.5, 0, [Metric("clean_acc", 0.88), Metric("robust_acc", 0.6, "pgd_l2", 0.5), Metric("worst_case_acc", 0.6, "l2", 0.5)])
    run = store.start_run("golden", "<memory>", 1, {})
    fields = {"dataset": "d", "architecture": "a", "pruner": "p1", "pruner_label": "p1", "sparsity": 0.9, "seed": 0, "dense_key": "x", "pruned_key": "y", "params": {}}
    store.claim("bad", run, fields)
    store.fail("bad", RuntimeError("boom"))
    return store


def test_boards_split_by_dataset_and_threat_model(golden: Store) -> None:
    with golden.session() as s:
        boards = leaderboards(s, FAMILIES, THREATS)
    assert [(b.dataset, b.threat_model) for b in boards] == [("d", "l2"), ("d", "linf")]
    linf_board = boards[1]
    assert linf_board.columns == [(WORST, 0.1), (WORST, 0.2), ("fgsm", 0.1), ("fgsm", 0.2)]
    assert linf_board.worst_columns == [(WORST, 0.1), (WORST, 0.2)]
    assert linf_board.eps_list == [0.1, 0.2]


def test_rows_ranks_and_means(golden: Store) -> None:
    with golden.session() as s:
        board = leaderboards(s, FAMILIES, THREATS)[1]
    # Mean worst case over eps, averaged over seeds: p1 (0.4+0.39)/2, dense (0.30+0.32)/2, p2 (0.20+0.22)/2.
    got = [(r.rank, r.pruner, r.family, r.sparsity, r.seeds, round(r.score.mean, 6)) for r in board.rows]  # type: ignore[union-attr]
    assert got == [
        (1, "p1", "filter", 0.5, [0, 1], 0.395),
        (2, "none", "none", 0.0, [0, 1], 0.31),
        (3, "p2", "layer", 0.5, [0, 1], 0.21),
    ]
    p1 = board.rows[0]
    assert p1.clean == Estimate(0.88, 0.0, 2)
    assert p1.robust[(WORST, 0.1)].mean == pytest.approx(0.51)
    assert p1.ratios["params_ratio"].mean == pytest.approx(0.5)
    assert p1.flags == {"gradient_masking": 1}
    assert [j.key for j in p1.jobs] == ["a0", "a1"]


def test_deltas_are_paired_per_seed_with_t_interval(golden: Store) -> None:
    with golden.session() as s:
        p1 = leaderboards(s, FAMILIES, THREATS)[1].rows[0]
    # Seed 0: 0.50-0.40 = +0.10; seed 1: 0.52-0.44 = +0.08 -> mean 0.09, sd 0.01414, half-width t1 * sd / sqrt 2.
    d = p1.delta_robust[(WORST, 0.1)]
    assert d.n == 2 and d.mean == pytest.approx(0.09)
    assert d.half_width == pytest.approx(T1 * math.sqrt(2) * 0.01 / math.sqrt(2))
    # Clean: 0.88-0.90 and 0.88-0.92.
    assert p1.delta_clean.mean == pytest.approx(-0.03)  # type: ignore[union-attr]
    # Mean worst case: (0.40 - 0.30) and (0.39 - 0.32).
    assert p1.delta_score.mean == pytest.approx(0.085)  # type: ignore[union-attr]
    assert p1.n_baselines == 2


def test_dense_row_is_its_own_baseline(golden: Store) -> None:
    with golden.session() as s:
        dense = next(r for r in leaderboards(s, FAMILIES, THREATS)[1].rows if r.is_dense)
    assert dense.delta_clean == Estimate(0.0, 0.0, 2)


def test_l2_board_has_no_dense_comparison(golden: Store) -> None:
    with golden.session() as s:
        board = leaderboards(s, FAMILIES, THREATS)[0]
    (row,) = [r for r in board.rows if not r.is_dense]
    assert row.robust[(WORST, 0.5)] == Estimate(0.6, None, 1)
    assert row.delta_robust == {}  # the dense jobs were never attacked in L2
    assert row.delta_clean is not None and row.delta_clean.mean == pytest.approx(-0.02) and row.delta_clean.n == 1


def test_incomplete_rows_rank_after_complete_ones(tmp_path: Path) -> None:
    store = Store(tmp_path / "cov.db")
    add_job(store, "n0", "none", 0.0, 0, linf(0.9, (0.3, 0.1)))
    # p2 only reached eps 0.1, where it is far better; its mean over one eps must not beat full rows.
    add_job(store, "b0", "p2", 0.5, 0, [Metric("clean_acc", 0.95), Metric("worst_case_acc", 0.9, "linf", 0.1)])
    with store.session() as s:
        board = leaderboards(s, FAMILIES, THREATS)[0]
    assert [(r.pruner, r.coverage) for r in board.rows] == [("none", 2), ("p2", 1)]


def test_baseline_prefers_the_same_evaluation(tmp_path: Path) -> None:
    store = Store(tmp_path / "pair.db")
    add_job(store, "n-big", "none", 0.0, 0, linf(0.9, (0.3, 0.1)), n_examples=1000)
    add_job(store, "n-small", "none", 0.0, 0, linf(0.9, (0.5, 0.1)), n_examples=100)
    add_job(store, "p", "p1", 0.5, 0, linf(0.9, (0.4, 0.1)), n_examples=100)
    with store.session() as s:
        jobs = job_records(s)
    p = next(j for j in jobs if j.key == "p")
    base = baseline_of(p, baseline_index(jobs, FAMILIES))
    assert base is not None and base.key == "n-small"


def test_attack_components_and_unknown_attacks_find_their_threat_model(tmp_path: Path) -> None:
    store = Store(tmp_path / "tm.db")
    metrics = [
        Metric("clean_acc", 0.9),
        Metric("robust_acc", 0.3, "autoattack/apgd-ce", 0.1),
        Metric("robust_acc", 0.2, "mystery", 0.1),  # not registered: the job's only worst-case threat model
        Metric("worst_case_acc", 0.2, "linf", 0.1),
    ]
    add_job(store, "j", "p1", 0.5, 0, metrics)
    with store.session() as s:
        (board,) = leaderboards(s, FAMILIES, THREATS)
    assert board.threat_model == "linf"
    assert board.columns == [(WORST, 0.1), ("autoattack/apgd-ce", 0.1), ("mystery", 0.1)]


def test_result_rows_and_status_counts(golden: Store) -> None:
    with golden.session() as s:
        rows = result_rows(s)
        counts = status_counts(s)
    assert (counts["done"], counts["failed"], sum(counts.values())) == (7, 1, 8)
    assert {r.job_key for r in rows} == {"n0", "n1", "a0", "a1", "b0", "b1", "l2"}
    first = rows[0]
    # Ordered by dataset, architecture, pruner label, sparsity, seed; "no eps" reads back as None.
    assert (first.pruner, first.seed, first.metric, first.attack, first.eps) == ("none", 0, "clean_acc", "", None)
    fgsm = [r for r in rows if r.job_key == "a0" and r.metric == "robust_acc"]
    assert [(r.attack, r.eps, r.value) for r in fgsm] == [("fgsm", 0.1, 0.5), ("fgsm", 0.2, 0.3)]


def test_estimate_and_t_quantile() -> None:
    assert Estimate.of([]) is None
    assert Estimate.of([0.5, float("nan")]) == Estimate(0.5, None, 1)
    e = Estimate.of([0.1, 0.2, 0.3])
    assert e is not None and e.mean == pytest.approx(0.2)
    assert e.half_width == pytest.approx(t_quantile(2) * 0.1 / math.sqrt(3))
    assert t_quantile(1) == pytest.approx(T1)
    # Textbook two-sided 95% values.
    for df, t in ((2, 4.302653), (4, 2.776445), (10, 2.228139), (30, 2.042272), (200, 1.971896)):
        assert t_quantile(df) == pytest.approx(t, abs=1e-6)
