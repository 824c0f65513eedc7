"""Tests written against surviving site mutants: how the leaderboard and docs/study.md write numbers, order rows and pick columns.

Each pins one behaviour a reader relies on (a clipped interval, a floored p-value, the ranking tie-break, the ranking
column, which rows and attacks a table lists). Expected values are worked out by hand or known by construction, on
hand-built boards, jobs and estimates: no dataset, no GPU, no network.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from harness.api.config import PROTOCOL_VERSION
from harness.api.metrics import Metric
from harness.site import formatting as fmt
from harness.site.board import (
    EpsInfo,
    Paired,
    among_correct,
    attack_label,
    eps_infos,
    is_reference,
    key_column,
    method_of,
    setups_of,
    view,
)
from harness.site.build import (
    _baseline,
    _metric_rows,
    _plugin_info,
    _pretty,
    build_site,
    reproduce_grid,
)
from harness.site.report import (
    _conditional,
    _pct,
    _ratio,
    _seconds,
    _verdicts,
    paired,
    report,
    splice,
)
from harness.store.boards import WORST, Board, BoardRow, Column
from harness.store.queries import JobRecord
from harness.store.session import Store
from harness.store.statistics import ACC, Estimate, PairedTest
from tests.test_boards import add_job, linf

E1, E8 = 1 / 255, 8 / 255
KEY: Column = (WORST, E8)

# ---- helpers ----


def job(key: str, pruner: str = "l1_filter", seed: int = 0, *, arch: str = "resnet20", params: dict[str, Any] | None = None,
        provenance: dict[str, Any] | None = None, dense_key: str = "dense") -> JobRecord:
    """A done job with no metrics, built directly (no store)."""
    return JobRecord(key, "cifar10", arch, pruner, pruner, 0.5 if pruner not in ("none", "dense_finetuned") else 0.0, seed, dense_key,
                     params or {}, provenance or {}, None, None, None, 1, None)


def brow(pruner: str, family: str, *, arch: str = "resnet20", sparsity: float = 0.5, jobs: list[JobRecord] | None = None,
         robust: dict[Column, float] | None = None, tests: dict[Column | str, PairedTest] | None = None,
         clean: float | None = None) -> BoardRow:
    """A board row built by hand: its robust means (one seed each) and its paired tests against the control."""
    r = BoardRow(arch, pruner, pruner, family, sparsity, "s", jobs or [job(f"{pruner}-{arch}", pruner, arch=arch)])
    r.robust = {c: Estimate(a, None, 1) for c, a in (robust or {}).items()}
    r.vs_control = dict(tests or {})
    r.clean = None if clean is None else Estimate(clean, None, 1)
    return r


def ptest(delta: float, p: float | None = 0.5, seeds: int = 3) -> PairedTest:
    """A paired test whose per-seed changes all equal `delta`."""
    return PairedTest(delta, p, seeds, (delta,) * seeds, 1, 1, tuple(range(seeds)))


def aa_job(key: str, pruner: str) -> JobRecord:
    """A job whose parameters ran AutoAttack at 8/255 (the eps of reference strength)."""
    return job(key, pruner, params={"attacks": [{"name": "autoattack", "eps": [E8], "params": {}}]})


# ---- formatting.py: numbers as the site writes them ----


def test_eps_a_hair_under_k_over_255_still_reads_k_over_255() -> None:
    """0.031372549 (8/255 written with 9 decimals) is 7.999999995 x 255: it rounds to 8/255, it is not truncated to 7/255."""
    assert fmt.eps(0.031372549) == "8/255"
    assert fmt.eps(2.0 / 255) == "2/255"


def test_eps_with_three_decimals_reads_as_itself() -> None:
    """An L2 budget of 1.125 prints whole, not as 1.12 (3 significant digits)."""
    assert fmt.eps(1.125) == "1.125"
    assert fmt.eps(0.125) == "0.125"


def test_num_switches_to_thousands_separators_at_ten_thousand() -> None:
    """Three significant digits below 10,000; from 10,000 up, a whole number with commas (never 1e+04)."""
    assert fmt.num(10000.0) == "10,000"
    assert fmt.num(0.12345) == "0.123" and fmt.num(12.345) == "12.3"
    assert fmt.num(0.12345, 4) == "0.1235"


def test_estimate_interval_above_100_percent_is_shown_clipped() -> None:
    """98 % +- 5 over 3 seeds reaches 103 %: the cell shows the range 93.0-100.0, not +-5.0 and not 103.0."""
    assert fmt.est(Estimate(0.98, 0.05, 3, (0.93, 0.99, 1.0))) == '98.0<small class="ci">[93.0–100.0]</small>'
    assert fmt.est(Estimate(0.5, None, 1, (0.5,))) == "50.0"  # one seed: no interval at all


def test_delta_interval_past_minus_or_plus_100_points_is_clipped_at_each_end() -> None:
    """-75 +- 50 points spans -125..-25: shown [-100.0, -25.0]; +75 +- 50 shown [+25.0, +100.0]."""
    assert fmt.delta(Estimate(-0.75, 0.5, 3)) == '-75.0<small class="ci">[-100.0, -25.0]</small>'
    assert fmt.delta(Estimate(0.75, 0.5, 3)) == '+75.0<small class="ci">[+25.0, +100.0]</small>'


def test_delta_half_width_is_unsigned() -> None:
    """Inside -100..+100 the interval is a plain +-half-width: '±1.0', never '±+1.0'."""
    assert fmt.delta(Estimate(-0.03, 0.01, 3)) == '-3.0<small class="ci">±1.0</small>'


@pytest.mark.parametrize(("p", "text"), [(5e-4, "p=0.0005"), (0.034, "p=0.034"), (0.0, "p&lt;0.0001"), (3e-7, "p&lt;0.0001"), (1.0, "p=1")])
def test_delta_p_value_is_floored_below_1e_4_and_never_dropped(p: float, text: str) -> None:
    """p is written with 2 significant digits, as p<0.0001 below 1e-4, and an exact p of 0 (a huge effect) still shows."""
    d = Paired((), Estimate(0.02, None, 1), PairedTest(0.02, p, 1, (0.02,), 2, 0))
    assert fmt.delta(d) == f'+2.0<small class="p">{text}</small>'


def test_direction_class_starts_at_a_twentieth_of_a_point() -> None:
    """A +0.1-point change reads as up; a +0.04-point change (shown +0.0) has no direction."""
    assert fmt.dclass(Paired.of([(0, 0.001)])) == "up"
    assert fmt.dclass(Paired.of([(0, -0.001)])) == "down"
    assert fmt.dclass(Paired.of([(0, 0.0004)])) == ""


@pytest.mark.parametrize(("seconds", "text"), [(59.94, "59.9 s"), (60, "1 min 00 s"), (3599, "59 min 59 s"), (3600, "1 h 00 min")])
def test_duration_changes_unit_at_a_minute_and_an_hour(seconds: float, text: str) -> None:
    """A minute is '1 min 00 s' (not '60.0 s'), an hour '1 h 00 min'."""
    assert fmt.duration(seconds) == text


@pytest.mark.parametrize(("metric", "v", "text"), [
    ("robust_acc", 0.25, "25.0 %"), ("worst_case_acc", 0.125, "12.5 %"), ("clean_acc_eval", 0.9, "90.0 %"), ("sparsity_achieved", 0.5, "50.0 %"),
    ("params_ratio", 0.5, "0.500 ×"), ("flag_gradient_masking", 1.0, "raised"), ("flag_gradient_masking", 0.0, "passed"),
    ("prune_seconds", 245.0, "4 min 05 s"), ("params", 272474.0, "272,474"),
])
def test_job_page_values_read_as_a_person_wants_them(metric: str, v: float, text: str) -> None:
    """Accuracies in %, ratios with 3 decimals, flags as raised/passed, times as durations, counts with commas."""
    assert fmt.value(metric, v) == text


def test_long_names_get_a_short_hashed_slug() -> None:
    """A 64-character name is its own slug; a 100-character one is cut to 40 characters plus an 8-digit hash."""
    assert fmt.slug("a" * 64) == "a" * 64
    s = fmt.slug("a" * 100)
    assert len(s) == 49 and s.startswith("a" * 40 + "-") and s != fmt.slug("a" * 101)


# ---- board.py: pairing, ranking column, rows, setups ----


def test_paired_per_seed_changes_are_in_seed_order() -> None:
    """Pairs given out of order come back sorted by seed, and the seeds cell reads in that order."""
    d = Paired.of([(2, 0.03), (0, 0.01), (1, 0.02)])
    assert d.per_seed == ((0, 0.01), (1, 0.02), (2, 0.03))
    assert fmt.seeds(d) == "s0 +1.0, s1 +2.0, s2 +3.0"


def test_paired_from_a_test_keeps_the_tests_own_seeds() -> None:
    """A test over seeds 3, 5, 7 labels its per-seed changes 3, 5, 7, not 0, 1, 2."""
    t = PairedTest(0.02, 0.01, 3, (0.01, 0.02, 0.03), 6, 0, seeds=(3, 5, 7))
    assert [s for s, _ in Paired.from_test(t).per_seed] == [3, 5, 7]
    assert [s for s, _ in Paired.from_test(PairedTest(0.0, None, 2, (0.0, 0.0), 0, 0)).per_seed] == [0, 1]  # no seeds known


def test_eps_infos_list_eps_ascending_and_autoattack_as_one_attack() -> None:
    """Attacks named at 8/255 before 1/255 still list 1/255 first; AutoAttack's stage apgd-ce is not an attack of its own."""
    cols: list[Column] = [KEY, ("autoattack", E8), ("autoattack/apgd-ce", E8), ("fgsm", E8), ("fgsm", E1)]
    params = {"attacks": [{"name": "fgsm", "eps": [E8, E1], "params": {"steps": None}}, {"name": "autoattack", "eps": [E8], "params": {}}]}
    r = brow("l1_filter", "filter", jobs=[job("j", params=params)], robust=dict.fromkeys(cols, 0.2))
    infos = eps_infos(Board("cifar10", "linf", cols, [r]))
    assert [(i.eps, i.attacks, i.reference) for i in infos] == [(E1, ("FGSM",), False), (E8, ("AutoAttack", "FGSM"), True)]


def _controls(at8: tuple[float, ...], at1: float = 0.3) -> Board:
    """Worst-case columns at 1/255 and 8/255; one control row per architecture with robust accuracy `at8` at 8/255."""
    cols: list[Column] = [(WORST, E1), KEY]
    rows = [brow("dense_finetuned", "control", arch=f"arch{i}", sparsity=0.0, robust={(WORST, E1): at1, KEY: a}) for i, a in enumerate(at8)]
    rows.append(brow("l1_filter", "filter", robust={(WORST, E1): 0.5, KEY: 0.5}))
    return Board("cifar10", "linf", cols, rows)


def test_ranking_eps_needs_every_reference_row_informative() -> None:
    """Two controls at 8/255 keep 30 % and 1 %: one has nothing left to lose there, so 1/255 ranks."""
    strong = [EpsInfo(E1, ("AutoAttack",), True), EpsInfo(E8, ("AutoAttack",), True)]
    assert key_column(_controls((0.30, 0.01)), strong, "dense_finetuned") == ((WORST, E1), True)
    assert key_column(_controls((0.30, 0.12)), strong, "dense_finetuned") == (KEY, True)


def test_ranking_eps_falls_back_to_the_smallest_reference_eps() -> None:
    """Where the control keeps under 10 % at every reference eps, the smallest of them ranks."""
    strong = [EpsInfo(E1, ("AutoAttack",), True), EpsInfo(E8, ("AutoAttack",), True)]
    assert key_column(_controls((0.05,), at1=0.05), strong, "dense_finetuned") == ((WORST, E1), True)


def test_without_a_reference_attack_the_largest_eps_ranks_flagged_weak() -> None:
    """No eps ran the reference attack: the largest worst-case eps ranks, flagged as lower strength."""
    weak = [EpsInfo(E1, ("FGSM",), False), EpsInfo(E8, ("FGSM",), False)]
    assert key_column(_controls((0.30,)), weak, "dense_finetuned") == (KEY, False)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://arxiv.org/abs/1608.08710", "https://arxiv.org/abs/1608.08710"), ("10.1109/ICCV.2017.155", "https://doi.org/10.1109/ICCV.2017.155"),
    ("http://example.org/paper", ""), ("javascript:alert(1)", ""),
])
def test_method_links_only_https_or_a_doi(url: str, shown: str) -> None:
    """An unregistered pruner's recorded link is kept when https, made a doi.org link when a DOI, dropped otherwise."""
    prov = {"plugins": {"pruner": {"paper": "Mine", "url": url}}}
    m = method_of(brow("mine", "filter", jobs=[job("m", "mine", provenance=prov)]))
    assert (m.paper, m.url, m.unit) == ("Mine", shown, "filters")


def test_setup_protocol_is_the_oldest_among_its_jobs() -> None:
    """A setup whose rows ran under protocol 1 and the current one states protocol 1."""
    old = brow("layer_l1", "layer", jobs=[job("o", "layer_l1", params={"protocol": 1})])
    new = brow("l1_filter", "filter", jobs=[job("n", params={"protocol": PROTOCOL_VERSION})])
    (s,) = setups_of(Board("cifar10", "linf", [KEY], [new, old]), "dense_finetuned")
    assert PROTOCOL_VERSION > 1 and s.protocol == 1


def test_setup_states_the_untouched_models_clean_accuracy_and_the_controls_beside_it() -> None:
    """resnet20 has both dense rows: the untouched one is stated (with its anchor), the control beside it; vgg has only the control."""
    rows = [brow("none", "none", sparsity=0.0, clean=0.80), brow("dense_finetuned", "control", sparsity=0.0, clean=0.85),
            brow("dense_finetuned", "control", arch="vgg_x", sparsity=0.0, clean=0.70)]
    (s,) = setups_of(Board("cifar10", "linf", [KEY], rows), "dense_finetuned")
    assert [(a, e.mean if e else None, anchor[0] if anchor else None) for a, e, anchor in s.dense_clean] == [("resnet20", 0.80, 0.9125), ("vgg_x", 0.70, None)]
    assert [(a, e.mean if e else None) for a, e in s.control_clean] == [("resnet20", 0.85)]


def _ranked_board() -> Board:
    """A control and four pruned rows at 0.5 against it at worst case 8/255 (the reference eps)."""
    ctl = brow("dense_finetuned", "control", sparsity=0.0, jobs=[aa_job("c", "dense_finetuned")], robust={KEY: 0.4, ("autoattack", KEY[1]): 0.4})
    rows = [ctl]
    # name: (change at 8/255, robust accuracy at 8/255); 'hrank' has no paired test at the key column.
    for name, d, acc in (("fpgm", -0.02, 0.38), ("hrank", None, 0.9), ("l1_filter", 0.01, 0.30), ("taylor", 0.01, 0.40)):
        tests: dict[Column | str, PairedTest] = {} if d is None else {KEY: ptest(d)}
        rows.append(brow(name, "filter", jobs=[aa_job(name, name)], robust={KEY: acc, ("autoattack", E8): acc}, tests=tests))
    return Board("cifar10", "linf", [KEY, ("autoattack", E8)], rows)


def test_ranking_ties_break_on_robust_accuracy_and_rows_without_a_change_rank_last() -> None:
    """taylor and l1_filter both gain +1 point: taylor (40 % robust) ranks over l1_filter (30 %); fpgm (-2) next; hrank (no test) last."""
    v = view(_ranked_board())
    assert v.key_column == KEY and v.key_strength
    assert [(r.label, r.rank) for r in v.rows] == [("dense_finetuned", None), ("taylor", 1), ("l1_filter", 2), ("fpgm", 3), ("hrank", 4)]
    assert v.single_sparsity  # every pruned row at 0.5


def test_robust_accuracy_among_correct_images_counts_only_clean_correct_ones() -> None:
    """Clean-correct images 0-1, robust-correct image 0 (and image 3, clean-wrong): 1 of 2 = 0.5; no clean-correct image: None."""
    clean, robust = np.array([True, True, False, False]), np.array([True, False, False, True])
    j = job("j")
    j.outcomes = {("clean_acc_eval", "", None): clean, ("worst_case_acc", "linf", E8): robust}
    assert among_correct(j, KEY, "linf") == 0.5
    j.outcomes = {("clean_acc_eval", "", None): np.zeros(4, bool), ("worst_case_acc", "linf", E8): robust}
    assert among_correct(j, KEY, "linf") is None


# ---- build.py: plugin pages, baselines, job pages ----


def test_plugin_page_lists_the_most_recorded_source_hash_first() -> None:
    """One job recorded hash aa, two recorded bb: bb (2 jobs) comes first."""
    jobs = [job(k, "mine", provenance={"plugins": {"pruner": {"sha256": h}}}) for k, h in (("1", "aa"), ("2", "bb"), ("3", "bb"))]
    assert _plugin_info("pruner", "mine", jobs).recorded == [("bb", 2), ("aa", 1)]


def test_job_baseline_prefers_the_dense_job_evaluated_the_same_way() -> None:
    """Of two dense jobs of the same trained model, the one with the job's own evaluation is its baseline, though listed second."""
    ev = {"eval": {"n_examples": 500}, "attacks": [{"name": "fgsm", "eps": [E8]}]}
    other = job("other", "none", params={"eval": {"n_examples": 100}, "attacks": ev["attacks"]})
    same = job("same", "none", params=dict(ev))
    assert _baseline(job("p", params=dict(ev)), {"dense": [other, same]}) is same
    assert _baseline(job("q", params={"eval": {"n_examples": 7}}), {"dense": [other, same]}) is other  # none alike: the first


def test_pretty_json_breaks_lines_two_levels_deep_only() -> None:
    """Top-level keys and their dicts' keys get a line each; deeper dicts stay on one line."""
    assert _pretty({"b": 1, "a": {"y": {"z": 1}, "x": []}}) == '{\n  "a": {\n    "x": [],\n    "y": {"z": 1}\n  },\n  "b": 1\n}'


def test_job_metrics_table_lists_each_metric_by_ascending_eps() -> None:
    """robust_acc recorded at 8/255 before 1/255 is listed at 1/255 first."""
    j = job("j")
    j.metrics = {("robust_acc", "fgsm", E8): 0.1, ("robust_acc", "fgsm", E1): 0.6, ("clean_acc", "", None): 0.9}
    html = str(_metric_rows(j))
    assert html.index(">clean_acc<") < html.index(">1/255<") < html.index(">8/255<")
    assert ">60.0 %<" in html and ">10.0 %<" in html


# ---- report.py: docs/study.md ----


def test_report_accuracy_cell_gives_the_interval_low_then_high_from_three_seeds() -> None:
    """40, 50, 60 %: mean 50.0, t(2) = 4.3027, half-width 4.3027 x 10 / sqrt(3) = 24.84 points -> [25.2, 74.8]."""
    assert _pct(Estimate.of([0.4, 0.5, 0.6], ACC)) == "50.0 [25.2, 74.8]"
    assert _pct(Estimate.of([0.4, 0.5], ACC)) == "45.0 [40.0, 50.0]"  # two seeds: the seeds themselves


def test_report_wall_time_rounds_to_the_nearest_second() -> None:
    """99.6 and 100.4 s both round to 100 s: one value, not the range 99-100."""
    assert _seconds([99.6, 100.4]) == "100" and _seconds([59.5, 1234.7]) == "60-1,235" and _seconds([]) == "–"


def test_among_correct_table_names_its_reference() -> None:
    """A board without a fine-tuned control compares against the untouched dense model, and says so."""
    col: Column = KEY
    row = SimpleNamespace(correct={col: (Estimate(0.5, None, 1), Paired.of([(0, 0.1)]))},
                          row=SimpleNamespace(architecture="a", pruner_label="p", outdated=False, sparsity=0.5))
    text = "\n".join(_conditional(SimpleNamespace(correct_columns=[col], fallback=True, rows=[row])))  # type: ignore[arg-type]
    assert "against the untouched dense model" in text and "fine-tuned dense control" not in text
    assert "| a | p | 0.5 | 50.0 (+10.0; per seed +10.0) |" in text
    text = "\n".join(_conditional(SimpleNamespace(correct_columns=[col], fallback=False, rows=[row])))  # type: ignore[arg-type]
    assert "against the fine-tuned dense control" in text


def test_splice_replaces_the_section_and_drops_the_reports_title() -> None:
    """The report's own '# title' is dropped and its boards move one level down under the kept heading."""
    doc = "# Study\n\nprose\n\n## Tables\n\nstale\n"
    generated = "# Study results\n\nintro\n\n## cifar10 board\n\n| a |"
    assert splice(doc, "Tables", generated) == "# Study\n\nprose\n\n## Tables\n\nintro\n\n### cifar10 board\n\n| a |\n"



# ---- through a store: the report's columns, the index's counts, a pruner page's rows ----


def _aa_metrics(clean: float, robust: float) -> list[Metric]:
    """Clean accuracy, AutoAttack at 8/255 with its apgd-ce stage, and the worst case it defines."""
    return [Metric("clean_acc", clean), Metric("robust_acc", robust, "autoattack", E8), Metric("robust_acc", robust + 0.1, "autoattack/apgd-ce", E8),
            Metric("worst_case_acc", robust, "linf", E8)]


def test_report_lists_autoattack_as_one_column_not_its_stages(tmp_path: Path) -> None:
    """AutoAttack's apgd-ce stage stays on the site: the study's tables and wall times name AutoAttack only."""

    store = Store(tmp_path / "r.db")
    for seed in range(3):
        add_job(store, f"c{seed}", "dense_finetuned", 0.0, seed, _aa_metrics(0.9, 0.3))
        add_job(store, f"p{seed}", "l1_filter", 0.5, seed, _aa_metrics(0.9, 0.4))
    text = report(store)
    assert f"autoattack {fmt.eps(E8)}" in text and "apgd-ce" not in text


def test_index_counts_failed_and_unfinished_jobs_apart(tmp_path: Path) -> None:
    """One done, one failed, one running job: '1 failed, 1 not finished' (a failed job is finished)."""

    store = Store(tmp_path / "r.db")
    add_job(store, "n0", "none", 0.0, 0, linf(0.9, (0.4, 0.2)))
    run = store.start_run("g", "<memory>", 1, {})
    for key in ("bad", "busy"):
        store.claim(key, run, {"dataset": "d", "architecture": "a", "pruner": "l1_filter", "pruner_label": "l1_filter", "sparsity": 0.5,
                               "seed": 0, "dense_key": "x", "pruned_key": key, "params": {}})
    store.fail("bad", RuntimeError("boom"))
    html = build_site(store, tmp_path / "site").read_text()
    assert "(1 failed, 1 not finished)" in html


def test_pruner_page_shows_the_reference_rows_of_its_own_architectures_only(tmp_path: Path) -> None:
    """l1_filter ran on a1 only: its page shows a1's dense row beside it, not a2's (where only hrank ran)."""

    store = Store(tmp_path / "r.db")
    for arch, pruner in (("a1", "l1_filter"), ("a2", "hrank")):
        add_job(store, f"n-{arch}", "none", 0.0, 0, linf(0.9, (0.4, 0.2)), arch=arch)
        add_job(store, f"p-{arch}", pruner, 0.5, 0, linf(0.85, (0.45, 0.25)), arch=arch)
    site = build_site(store, tmp_path / "site").parent
    page = (site / "pruners" / "l1_filter.html").read_text()
    assert 'data-arch="a1"' in page and 'data-arch="a2"' not in page
    assert 'data-arch="a2"' in (site / "pruners" / "hrank.html").read_text()


def test_reproduce_grid_leaves_unset_options_out() -> None:
    """An option recorded as None (TOML has no null) is left out of the grid, so it takes its default."""
    params = {"pruned": {"dense": {"train": {"epochs": 2, "n_train": None}}, "finetune": {"epochs": 1, "lr": None}}, "eval": {"n_examples": 100}}
    text = reproduce_grid(job("k", params=params))
    assert "[train]\nepochs = 2\n\n[finetune]\nepochs = 1\n\n[eval]\nn_examples = 100\n" in text and "None" not in text and "n_train" not in text


def test_job_page_links_its_dense_baseline_and_the_dense_job_says_it_is_one(tmp_path: Path) -> None:
    """The pruned job's page links the dense job of its trained model; the dense job's own page names no baseline."""
    store = Store(tmp_path / "r.db")
    add_job(store, "n0", "none", 0.0, 0, linf(0.9, (0.4, 0.2)))
    add_job(store, "p0", "l1_filter", 0.5, 0, linf(0.85, (0.45, 0.25)))
    jobs = build_site(store, tmp_path / "site").parent / "jobs"
    assert '<dt>Dense baseline</dt><dd><a href="../jobs/n0.html"><code>n0</code></a></dd>' in (jobs / "p0.html").read_text()
    assert "<dt>Dense baseline</dt><dd>this job is the dense model, or none was run</dd>" in (jobs / "n0.html").read_text()


def test_attack_label_names_the_attack_and_its_steps() -> None:
    """pgd_linf with 10 steps is 'PGD-10'; without steps just its display name; an unknown attack keeps its own name."""
    assert attack_label({"name": "pgd_linf", "params": {"steps": 10}}) == "PGD-10"
    assert attack_label({"name": "autoattack", "params": {}}) == "AutoAttack" and attack_label({"name": "mine"}) == "mine"


def test_report_cost_ratios_have_two_decimals() -> None:
    """params x 0.456 reads 0.46 in the report's tables (one decimal would round 0.456 and 0.54 alike to 0.5)."""
    r = brow("l1_filter", "filter")
    r.ratios = {"params_ratio": Estimate(0.456, None, 1)}
    assert _ratio(r, "params_ratio") == "0.46" and _ratio(r, "macs_ratio") == "–"


def test_verdict_table_leaves_an_eps_without_pruned_rows_blank() -> None:
    """At 1/255 no pruned row has a test against the control: its cell is '–', not a verdict word."""
    rows = [brow("dense_finetuned", "control", sparsity=0.0), brow("l1_filter", "filter", tests={KEY: ptest(0.0, p=1.0)})]
    lines = _verdicts(Board("cifar10", "linf", [(WORST, E1), KEY], rows))
    (line,) = [x for x in lines if x.startswith("| worst case |")]
    assert line.startswith("| worst case | – | does not support: 1 n.s. (p = 1)")


def test_num_never_writes_exponent_notation() -> None:
    """A plain number stays plain: 1234.5 with 3 digits and 9999.7 with 4 are 1,234 (half to even) and 10,000."""
    assert fmt.num(1234.5) == "1,234" and fmt.num(999.7) == "1,000" and fmt.num(123.4) == "123"
    assert fmt.value("train_img_per_s", 9999.7) == "10,000"


@pytest.mark.parametrize(("seconds", "text"), [(59.96, "1 min 00 s"), (119.6, "2 min 00 s"), (3599.6, "1 h 00 min"), (7379.0, "2 h 03 min")])
def test_a_duration_is_rounded_to_the_unit_it_shows(seconds: float, text: str) -> None:
    """59.96 s is '1 min 00 s' (not '60.0 s' or '0 min 59 s'); 7379 s is 122.98 min, so '2 h 03 min'."""
    assert fmt.duration(seconds) == text


def test_a_dense_row_is_a_reference_by_its_family_or_by_its_name() -> None:
    """A control known only by its family, or a dense row whose family this harness does not know, is shown unranked."""
    assert is_reference(brow("my_control", "control", sparsity=0.0))  # another name, the control family
    assert is_reference(brow("dense_finetuned", "", sparsity=0.0)) and is_reference(brow("none", "", sparsity=0.0))  # names alone
    assert not is_reference(brow("l1_filter", "filter"))


def test_report_gives_no_interval_below_three_seeds() -> None:
    """Two seeds: the Δ control cell shows the per-seed changes and p, never the paired interval (it speaks for 3 seeds up)."""
    two = PairedTest(0.1, 1e-3, 2, (0.1, 0.1), 20, 0, (0, 1), 200)
    assert paired(two, interval=True) == "+10.0 [+10.0, +10.0] (p=0.001)"
    three = PairedTest(0.1, 1e-3, 3, (0.1, 0.1, 0.1), 30, 0, (0, 1, 2), 300)
    lo, hi = three.interval()  # type: ignore[misc]
    assert paired(three, interval=True) == f"+10.0 ({100 * lo:+.1f} to {100 * hi:+.1f}; p=0.001)" and paired(three) == "+10.0 (p=0.001)"
