"""What a board lets one conclude: setups apart, the verdict per attack and eps, and the limits, from known data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.site.board import families, setups_of, threat_models, view
from harness.site.build import build_site
from harness.site.findings import (
    Tally,
    largest_gain,
    limits,
    setup_text,
    split,
    verdict,
    verdict_grid,
)
from harness.site.report import report
from harness.store.boards import WORST, leaderboards
from harness.store.queries import job_records
from harness.store.session import Store
from tests.test_boards import add_job
from tests.test_site import CONTROL_PROV, E1, E8, aa, aa_params, board_store, board_view


def _converged(store: Store, seeds: int = 1) -> None:
    """A second setup from grid `study`: all training images, 100 epochs, dense 90 %, the control at 2 % under AutoAttack at 8/255."""
    for s in range(seeds):
        def params(pruner: str, sparsity: float) -> dict[str, object]:
            p = aa_params(s, pruner, sparsity)
            p["pruned"]["dense"]["train"] = {"epochs": 100, "regime": "standard"}  # type: ignore[index]
            return p

        kw = {"dataset": "cifar10", "arch": "resnet20", "grid": "study", "dense_key": f"full-dense-{s}"}
        add_job(store, f"fn{s}", "none", 0.0, s, aa(0.90, 0.60, 0.01), params=params("none", 0.0), **kw)  # type: ignore[arg-type]
        add_job(store, f"fc{s}", "dense_finetuned", 0.0, s, aa(0.90, 0.62, 0.02), params=params("dense_finetuned", 0.0),
                provenance=CONTROL_PROV, **kw)  # type: ignore[arg-type]
        add_job(store, f"fp{s}", "l1_filter", 0.5, s, aa(0.85, 0.50, 0.02), params=params("l1_filter", 0.5), **kw)  # type: ignore[arg-type]


def _boards(store: Store):  # type: ignore[no-untyped-def]
    with store.session() as s:
        (board,) = leaderboards(s, families(), threat_models())
    return split(board)


def test_jobs_know_the_grid_of_their_run(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db", seeds=1)
    _converged(store)
    with store.session() as s:
        grids = {j.key: j.grid for j in job_records(s)}
    assert grids["none0"] == "golden" and grids["fn0"] == "study"


def test_each_setup_is_its_own_board_the_converged_one_first(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db")  # 5,000 images, 8 epochs, dense 50-60 %: a reduced budget
    _converged(store)
    parts = _boards(store)
    assert len(parts) == 2
    assert {j.grid for r in parts[0].rows for j in r.jobs} == {"study"}
    assert {j.grid for r in parts[1].rows for j in r.jobs} == {"golden"}
    assert len({p.slug for p in parts}) == 2
    # Each part ranks and tests its own rows only: the study's l1_filter pairs with the study's control.
    l1 = next(r for r in parts[0].rows if r.pruner == "l1_filter")
    assert [j.key for j in l1.jobs] == ["fp0"] and [c.key for c in l1.control_jobs.values()] == ["fc0"]

    text = report(store, "T")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == 2 and "grid study" in headings[0] and "grid golden" in headings[1]
    first, second = text.split("\n## ")[1:]
    assert "Reduced budget" not in first
    assert "**Reduced budget:** dense resnet20 at 50.0 % clean, more than 10 points under the published 91.2 %." in second
    assert "all 50,000" not in first  # no data provenance in these jobs: no invented training-set size

    html = (build_site(store, tmp_path / "site").parent / "index.html").read_text()
    assert len(re.findall(r"<h2>cifar10 · L∞ · grid", html)) == 2
    assert html.count('class="note reduced"') == 1
    assert html.index("grid study") < html.index("grid golden") < html.index('class="note reduced"')


def test_one_setup_keeps_one_board(tmp_path: Path) -> None:
    (board,) = _boards(board_store(tmp_path / "r.db"))
    assert board.setup == "" and board.slug == "cifar10-linf"


def test_verdict_per_attack_and_eps_counts_rows_by_paired_test(tmp_path: Path) -> None:
    v = board_view(board_store(tmp_path / "r.db"))  # 3 seeds; vs the control: l1_filter +4..+6 at 8/255, layer_l1 -1..-3
    eps, grid = verdict_grid(v.board)
    assert eps == [E1, E8]
    by = dict(grid)
    assert list(by) == ["worst case", "AutoAttack", "FGSM"]
    t1, t8 = by["worst case"]
    assert t1 is not None and t8 is not None
    assert (t1.up, t1.down, t1.same, t1.word) == (0, 2, 0, "contradicts")  # -5 and -2 points at 1/255
    assert (t8.up, t8.down, t8.same, t8.word) == (1, 1, 0, "does not support")
    assert t8.mean_delta == pytest.approx((0.05 - 0.02) / 2)
    assert t8.p_significant is not None and t8.p_significant < 1e-4
    assert by["AutoAttack"][0] is None  # AutoAttack did not run at 1/255
    assert "1 gain" in t8.text() and "1 lose" in t8.text() and "Δ +1.5 pts" in t8.text()
    assert verdict(v.board.rows, (WORST, E1)).startswith("contradicts the claim: 0 of 2")
    assert "no verdict" not in verdict(v.board.rows, (WORST, E1))  # every row has 3 seeds: one verdict, not two
    # How large a gain the data leave open: both rows lose at 1/255; at 8/255 l1_filter gains, so its bound is the largest.
    bound1, bound8 = largest_gain(v.board.rows, (WORST, E1)), largest_gain(v.board.rows, (WORST, E8))
    assert bound1 is not None and bound8 is not None
    assert bound1[0] < 0 and bound1[2] == 2
    assert f"every row loses at least {-100 * bound1[0]:.1f} points" in verdict(v.board.rows, (WORST, E1))
    assert bound8[1].pruner == "l1_filter" and bound8[0] > t8.mean_delta
    assert f"no row's gain exceeds {100 * bound8[0]:+.1f} points" in verdict(v.board.rows, (WORST, E8))
    # A one-pass iterable gives the same sentence: the verdict reads its rows twice (counts, then the bound).
    assert verdict(iter(v.board.rows), (WORST, E8)) == verdict(v.board.rows, (WORST, E8))


def test_a_column_of_unchanged_rows_states_their_p_value_not_a_bound() -> None:
    """Where every row is unchanged (8/255, all at 0 %), p = 1 is each row's value; "p ≥ 1" would read as a bound."""
    assert "6 n.s. (p = 1)" in Tally((WORST, E8), same=6, p_other=1.0).text()
    assert "6 n.s. (p ≥ 0.064)" in Tally((WORST, E8), same=6, p_other=0.0641).text()


def test_fewer_than_three_seeds_give_no_verdict(tmp_path: Path) -> None:
    v = board_view(board_store(tmp_path / "r.db", seeds=2))
    _, grid = verdict_grid(v.board)
    t1 = dict(grid)["worst case"][0]
    assert t1 is not None and t1.down == 2 and t1.word.startswith("no verdict")
    assert verdict(v.board.rows, (WORST, E1)).startswith("no verdict with fewer than 3 seeds")


def test_limits_name_seeds_anchor_saturation_weak_eps_and_scope(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db")
    _converged(store)
    study, golden = _boards(store)
    lim = limits(view(study, verdict))
    text = "\n".join(lim)
    assert "1 seed: no change is marked significant" in text
    assert "90.0 % clean, 1.2 points under the published 91.2 %" in text
    assert "At ε=8/255 the reference row keeps 2.0 %" in text  # the control is saturated there
    assert "At ε=1/255 the reference attack did not run" in text
    assert "Only resnet20 on cifar10 under standard training, at sparsity 0.5, fine-tuned 1 epoch" in text
    assert "Reduced budget" not in text
    g = "\n".join(limits(view(golden, verdict)))
    assert "3 seeds: the paired p-values pool" in g
    assert "At ε=8/255 the reference row keeps" not in g  # the golden control keeps 20 %


def test_setup_paragraph_states_data_budget_accuracy_seeds_images_attacks(tmp_path: Path) -> None:
    v = board_view(board_store(tmp_path / "r.db"))
    (s,) = setups_of(v.board, v.control)
    text = setup_text(s)
    assert ", per seed in seed order 50.00, 50.00, 50.00 %; after the control's" in text  # the target is per seed
    for fact in ("Grid golden", "8 epochs of standard training", "fine-tuned 1 epoch", "resnet20 50.0 % (published 91.2 %",
                 "after the control's fine-tuning: resnet20 60.0 %",
                 "Seeds: 3 (0, 1, 2)", "the same 300 test images", "ε=1/255: FGSM (lower strength)", "ε=8/255: AutoAttack + FGSM"):
        assert fact in text, fact


def test_setup_paragraph_gives_each_seeds_dense_accuracy_in_seed_order() -> None:
    """A target such as "at least 90 % for every seed" is checked against each seed, not against the mean."""
    from harness.site.board import Setup
    from harness.store.statistics import Estimate

    dense = Estimate.of([0.8854, 0.8861, 0.8827])
    s = Setup("k", "cifar10", None, 50000, 100, 10, "standard", 500, [0, 1, 2], [], dense_clean=[("resnet20", dense, None)])
    assert "resnet20 88.5 %, per seed in seed order 88.54, 88.61, 88.27 %." in setup_text(s)
    one = Setup("k", "cifar10", None, 50000, 100, 10, "standard", 500, [0], [], dense_clean=[("resnet20", Estimate.of([0.8854]), None)])
    assert "resnet20 88.5 %." in setup_text(one)  # one seed: the mean is the seed


def test_verdict_counts_the_rows_with_three_seeds_and_leaves_the_rest_pending(tmp_path: Path) -> None:
    """A study spread over sessions gets a verdict on its finished rows; a row with one seed so far waits outside it."""
    store = board_store(tmp_path / "r.db")
    add_job(store, "late0", "hrank", 0.5, 0, aa(0.9, 0.9, 0.9), dataset="cifar10", arch="resnet20", params=aa_params(0, "hrank", 0.5))
    v = board_view(store)
    t1, t8 = dict(verdict_grid(v.board)[1])["worst case"]
    assert t1 is not None and t8 is not None
    assert (t1.up, t1.down, t1.same, t1.pending, t1.word) == (0, 2, 0, 1, "contradicts")  # as without hrank
    assert (t8.up, t8.down, t8.pending) == (1, 1, 1) and t8.mean_delta == pytest.approx((0.05 - 0.02) / 2)
    assert "1 pending (< 3 seeds)" in t8.text()
    text = verdict(v.board.rows, (WORST, E1))
    assert text.startswith("contradicts the claim: 0 of 2 pruned rows with 3 seeds") and "1 row still short of 3 seeds is left out" in text
    # hrank gains 50 points on its one seed: the bound covers the two counted rows only, as the verdict does.
    bound = largest_gain(v.board.rows, (WORST, E1))
    assert bound is not None and bound[2] == 2 and bound[1].pruner != "hrank" and bound[0] < 0
    assert "every row loses at least" in text and "jointly over the 2 rows with 3 seeds" in text


def test_report_of_a_partial_row_says_which_rows_lag(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db")
    add_job(store, "late0", "hrank", 0.5, 0, aa(0.5, 0.3, 0.2), dataset="cifar10", arch="resnet20", params=aa_params(0, "hrank", 0.5))
    text = "\n".join(limits(board_view(store)))
    assert "1 of 5 rows have fewer than 3 seeds so far (hrank 0.5: 1)" in text



def test_report_counts_each_grids_jobs_by_state(tmp_path: Path) -> None:
    store = board_store(tmp_path / "r.db", seeds=1)  # 4 done jobs of grid golden
    run = store.start_run("study", "grids/study.toml", 2, {})
    fields = {"dataset": "cifar10", "architecture": "resnet20", "pruner": "hrank", "pruner_label": "hrank", "sparsity": 0.5,
              "dense_key": "dk", "pruned_key": "pk"}
    store.add_jobs(run, [(f"q{i}", fields | {"seed": i, "params": aa_params(i, "hrank", 0.5)}) for i in range(2)])
    store.fail("q1", "boom")
    text = report(store, "T")
    assert "- grid golden: 4 of 4 jobs done\n" in text
    assert "- grid study: 0 of 2 jobs done (1 pending, 1 failed)\n" in text


def test_holm_keeps_family_wise_error_at_alpha() -> None:
    from harness.store.statistics import holm

    # 4 tests: thresholds 0.0125, 0.0167, 0.025, 0.05 in order of p; the step-down stops at the first failure.
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.001, 0.012, 0.02, 0.04]) == [True, True, True, True]
    assert holm([0.02, 0.02]) == [True, True] and holm([0.03, 0.04]) == [False, False]  # raw p < 0.05 is not enough
    assert holm([]) == []


def test_tally_counts_a_row_only_where_holm_keeps_it() -> None:
    from types import SimpleNamespace

    from harness.site.findings import tally

    col = (WORST, E1)

    def row(delta: float, p: float) -> SimpleNamespace:
        test = SimpleNamespace(delta=delta, p_value=p, n_seeds=3)
        return SimpleNamespace(is_dense=False, is_control=False, vs_control={col: test})

    # Raw p < 0.05 for all three, but Holm's thresholds are 0.0167, 0.025, 0.05: the 0.03 loss fails, and so does the rest.
    t = tally([row(-0.10, 1e-6), row(-0.02, 0.03), row(+0.01, 0.04)], col)
    assert (t.down, t.up, t.same) == (1, 0, 2) and t.p_significant == 1e-6 and t.p_other == 0.03
    assert t.word == "does not support"  # 1 loss against 2 without a significant change


def test_a_newer_protocol_with_another_training_budget_hides_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    for pruner, sp, prov in (("none", 0.0, None), ("dense_finetuned", 0.0, CONTROL_PROV), ("l1_filter", 0.5, None)):
        # an older grid's reduced-budget rows, under an older protocol, with no newer run of the same training
        add_job(store, f"old-{pruner}", pruner, sp, 0, aa(0.5, 0.3, 0.1), dataset="cifar10", arch="resnet20",
                params=aa_params(0, pruner, sp) | {"protocol": 1}, provenance=prov, grid="cifar-cpu")
    _converged(store)  # the same pruners under the current protocol, trained 100 epochs
    study, old = _boards(store)
    assert {r.pruner for r in old.rows} == {"none", "dense_finetuned", "l1_filter"}
    l1 = next(r for r in old.rows if r.pruner == "l1_filter")
    assert [c.key for c in l1.control_jobs.values()] == ["old-dense_finetuned"]  # its own control, not hidden by the study's
