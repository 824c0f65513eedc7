"""The study report: paired deltas with intervals, and verdicts that follow the data."""

from __future__ import annotations

from harness.api.metrics import Metric
from harness.site.report import report
from harness.store.session import Store
from tests.test_queries import add_job


def _robust(clean: float, pgd: float) -> list[Metric]:
    return [Metric("clean_acc", clean), Metric("clean_acc_eval", clean), Metric("robust_acc", pgd, attack="pgd_linf", eps=8 / 255),
            Metric("worst_case_acc", pgd, attack="linf", eps=8 / 255)]


def test_report_pairs_by_seed_and_states_verdicts(store: Store) -> None:
    for seed, (dense, pruned) in enumerate([(0.30, 0.40), (0.20, 0.31), (0.25, 0.34)]):
        add_job(store, f"d{seed}", "none", 0.0, seed, _robust(0.9, dense))
        add_job(store, f"p{seed}", "l1_filter", 0.5, seed, _robust(0.88, pruned))
    text = report(store, "T")
    assert text.startswith("# T")
    row = next(line for line in text.splitlines() if "| l1_filter |" in line)
    # Paired changes +10, +11, +9 points: mean +10.0 with a t interval (df = 2) of half-width 2.5.
    assert "(+10.0 ± 2.5)" in row
    assert "pgd_linf, eps 8/255**: supports the claim: 1 of 1 pruned rows gain robustness beyond the 95% CI" in text


def test_single_seed_is_inconclusive(store: Store) -> None:
    add_job(store, "d0", "none", 0.0, 0, _robust(0.9, 0.3))
    add_job(store, "p0", "l1_filter", 0.5, 0, _robust(0.9, 0.2))
    assert "1 single-seed rows (no interval): 0 higher, 1 lower" in report(store)
