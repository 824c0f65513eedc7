"""The study report: pruned rows against the fine-tuned control and the dense model, paired tests with known answers."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api.config import PROTOCOL_VERSION
from harness.api.metrics import Metric
from harness.evaluation.protocol import accuracy_metric
from harness.site.report import report
from harness.store.session import Store
from harness.store.statistics import ACC, Estimate, binomial_two_sided, paired_test
from tests.test_boards import add_job, job_params

EPS = 8 / 255
N = 100


def _mask(correct: int, shift: int = 0) -> torch.Tensor:
    """N examples, `correct` of them correct, starting at index `shift`."""
    m = torch.zeros(N, dtype=torch.bool)
    m[shift : shift + correct] = True
    return m


def _job(robust: torch.Tensor, clean: float = 0.9) -> list[Metric]:
    """A job whose worst case (reference strength) and PGD outcomes are `robust`."""
    return [Metric("clean_acc", clean), accuracy_metric("clean_acc_eval", torch.ones(N, dtype=torch.bool)),
            accuracy_metric("robust_acc", robust, "pgd_linf", EPS), accuracy_metric("worst_case_acc", robust, "linf", EPS)]


def _params(pruner: str, seed: int, sparsity: float) -> dict:
    return job_params("d", "a", seed, pruner, sparsity) | {"protocol": PROTOCOL_VERSION}


def _study(store: Store, seeds: int) -> None:
    """Per seed: dense 20 robust, control 30, pruned 40 (the pruned model keeps the control's 30 and adds 10)."""
    for seed in range(seeds):
        add_job(store, f"d{seed}", "none", 0.0, seed, _job(_mask(20)), params=_params("none", seed, 0.0))
        add_job(store, f"c{seed}", "dense_finetuned", 0.0, seed, _job(_mask(30)), params=_params("dense_finetuned", seed, 0.0))
        add_job(store, f"p{seed}", "l1_filter", 0.5, seed, _job(_mask(40)), params=_params("l1_filter", seed, 0.5))


def test_exact_binomial_known_values() -> None:
    assert binomial_two_sided(0, 10) == pytest.approx(2 / 1024)
    assert binomial_two_sided(5, 10) == 1.0
    # 12 gained vs 2 lost: 2 * (C(14,0) + C(14,1) + C(14,2)) / 2^14.
    assert binomial_two_sided(12, 14) == pytest.approx(2 * (1 + 14 + 91) / 2**14)


def test_paired_test_pools_discordant_pairs_over_seeds() -> None:
    """Seeds contribute their discordant pairs: 4+4+4 gained, 1+1+0 lost -> p of 12 of 14."""
    pairs = []
    for lost in (1, 1, 0):
        ref = _mask(50).numpy()
        mine = ref.copy()
        mine[50:54] = True  # 4 gained
        mine[:lost] = False
        pairs.append((mine.mean(), ref.mean(), mine, ref))
    t = paired_test(pairs)
    assert (t.gained, t.lost, t.n_seeds) == (12, 2, 3)
    assert t.p_value == pytest.approx(binomial_two_sided(12, 14))
    assert t.significant
    assert t.delta == pytest.approx((0.03 + 0.03 + 0.04) / 3)


def test_binomial_p_value_holds_past_a_thousand_discordant_pairs() -> None:
    """2.0**n overflows a float from n = 1024; a full test set over a few seeds has that many discordant pairs."""
    assert binomial_two_sided(600, 1200) == 1.0
    assert binomial_two_sided(500, 1200) == pytest.approx(2 * math.fsum(math.exp(
        math.lgamma(1201) - math.lgamma(i + 1) - math.lgamma(1201 - i) - 1200 * math.log(2)) for i in range(501)), rel=1e-9)
    assert binomial_two_sided(0, 5000) == 0.0


@pytest.mark.parametrize("gained, lost", [(30, 10), (10, 30), (20, 21), (0, 5), (7, 0), (18, 8), (8, 18), (0, 0), (3, 3)])
def test_paired_interval_inverts_the_score_test(gained: int, lost: int) -> None:
    """Tango's interval holds the estimate, and excludes 0 exactly where McNemar's score test (|g - l| / sqrt(g + l) > z) rejects."""
    n = 1500
    ref = np.zeros(n, bool)
    ref[:lost] = True
    mine = np.zeros(n, bool)
    mine[n - gained:] = True
    t = paired_test([(mine.mean(), ref.mean(), mine, ref)])
    assert t.n_pairs == n
    lo, hi = t.interval(0.95)
    assert lo <= (gained - lost) / n <= hi and -1 <= lo < hi <= 1
    rejects = gained + lost > 0 and abs(gained - lost) / math.sqrt(gained + lost) > 1.959963984540054
    assert (lo > 0 or hi < 0) == rejects
    lo99, hi99 = t.interval(0.99)
    assert lo99 < lo and hi < hi99  # more confidence, a wider interval
    assert paired_test([(0.5, 0.5, None, None)]).interval() is None  # no outcomes, no interval


def test_paired_interval_covers_the_true_difference() -> None:
    """Coverage of the 95 % interval over simulated paired outcomes, including a nearly tied, nearly saturated case."""
    rng = np.random.default_rng(0)
    for p_gain, p_lose in ((0.02, 0.01), (0.001, 0.0)):
        covered = 0
        for _ in range(400):
            g, l_, _rest = rng.multinomial(1500, [p_gain, p_lose, 1 - p_gain - p_lose])
            mine = np.r_[np.ones(g, bool), np.zeros(l_, bool), np.zeros(1500 - g - l_, bool)]
            ref = np.r_[np.zeros(g, bool), np.ones(l_, bool), np.zeros(1500 - g - l_, bool)]
            lo, hi = paired_test([(0.0, 0.0, mine, ref)]).interval(0.95)
            covered += lo <= p_gain - p_lose <= hi
        assert covered / 400 >= 0.92, (p_gain, p_lose, covered)


def test_two_seeds_are_never_significant() -> None:
    ref = _mask(10).numpy()
    mine = _mask(60).numpy()
    t = paired_test([(0.6, 0.1, mine, ref)] * 2)
    assert t.p_value < 1e-20 and not t.significant


def test_intervals_are_clipped_to_accuracy_range() -> None:
    e = Estimate.of([1.0, 0.98, 0.6], ACC)
    assert e.mean + e.half_width > 1.0  # the raw t interval leaves [0, 1]
    assert e.high == 1.0 and 0.0 <= e.low <= e.mean


def test_report_headline_is_against_the_control(store: Store) -> None:
    _study(store, 3)
    text = report(store, "T")
    assert text.startswith("# T")
    row = next(line for line in text.splitlines() if "| l1_filter |" in line and "Δ" not in line and "filters" in line and "p=" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # clean, worst 8/255 vs control, then clean, worst 8/255 vs dense. 3 seeds x 10 gained, 0 lost: p = 2 / 2^30.
    p_control = f"p={2 / 2**30:.2g}"
    p_dense = f"p={2 / 2**60:.2g}"
    # Δ control carries the 95 % paired score interval: 300 pairs (3 seeds x 100 images), 0 or 30 discordant.
    none, ten = paired_test([(0.9, 0.9, _mask(N).numpy(), _mask(N).numpy())] * 3), paired_test([(0.4, 0.3, _mask(40).numpy(), _mask(30).numpy())] * 3)
    (lo0, hi0), (lo10, hi10) = none.interval(), ten.interval()
    assert 0 < hi0 < 0.02 and 0 < lo10 < 0.1 < hi10 < 0.2
    assert cells[6:10] == [f"+0.0 ({100 * lo0:+.1f} to {100 * hi0:+.1f}; p=1)", f"**+10.0 ({100 * lo10:+.1f} to {100 * hi10:+.1f}; {p_control})**",
                           "+0.0 (p=1)", f"**+20.0 ({p_dense})**"]
    assert "supports the claim: 1 of 1 pruned rows gain robustness over the fine-tuned control" in text


def test_report_lists_rows_in_the_sites_order(store: Store) -> None:
    """References first (the control, then the dense model), then pruned rows by their change against the control, as the site shows them.

    By mean robust accuracy alone the pruned rows would split the references: l1_filter (40) over the control (30)
    over hrank (25) over the dense model (20).
    """
    _study(store, 3)
    for seed in range(3):
        add_job(store, f"h{seed}", "hrank", 0.5, seed, _job(_mask(25)), params=_params("hrank", seed, 0.5))
    lines = report(store).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| architecture | pruner | sparsity | unit | seeds"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[head + 2 :]))
    assert [line.split("|")[2].strip() for line in table] == ["dense_finetuned", "none", "l1_filter", "hrank"]
    assert "the pruned rows ranked by their paired change in worst case 8/255 against dense_finetuned" in "\n".join(lines)
    delta = next(i for i, line in enumerate(lines) if line.startswith("| architecture | pruner | sparsity | unit | params×"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[delta + 2 :]))
    assert [line.split("|")[2].strip() for line in table] == ["dense_finetuned", "l1_filter", "hrank"]


def test_report_gives_each_attack_against_the_control(store: Store) -> None:
    _study(store, 3)
    lines = report(store).splitlines()
    head = next(i for i, line in enumerate(lines) if "attack by attack" in line)
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[head + 2 :]))
    assert table[0].split("|")[4].strip() == "Δ control pgd_linf 8/255"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    # Only the pruned row: PGD sees the same 10 gained images on each of 3 seeds as the worst case does.
    assert rows == [["a", "l1_filter", "0.5", f"**+10.0 (p={2 / 2**30:.2g})**"]]


def _three_rows(store: Store) -> None:
    """Against a control at 30: l1_filter gains 10 a seed (p = 2^-29), hrank 2 a seed (p = 2^-5 = 0.031), random_filter nothing."""
    for seed in range(3):
        add_job(store, f"c{seed}", "dense_finetuned", 0.0, seed, _job(_mask(30)), params=_params("dense_finetuned", seed, 0.0))
        for pruner, correct in (("l1_filter", 40), ("hrank", 32), ("random_filter", 30)):
            add_job(store, f"{pruner}{seed}", pruner, 0.5, seed, _job(_mask(correct)), params=_params(pruner, seed, 0.5))


def test_bold_marks_only_the_changes_holm_keeps_as_the_verdict_counts(store: Store) -> None:
    """hrank's p = 0.031 is below 0.05 alone, but Holm over 3 rows asks p < 0.025 of the second smallest: not bold, not counted."""
    from harness.site.board import families, threat_models, view
    from harness.store.boards import leaderboards

    _three_rows(store)
    text = report(store)
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if "attack by attack" in line)
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[head + 2 :]))
    cells = {c[1]: c[3] for line in table[2:] if (c := [x.strip() for x in line.strip("|").split("|")])}
    assert cells == {"l1_filter": f"**+10.0 (p={2 / 2**30:.2g})**", "hrank": f"+2.0 (p={2 / 2**6:.2g})", "random_filter": "+0.0 (p=1)"}
    assert "1 of 3 pruned rows gain robustness over the fine-tuned control" in text
    with store.session() as s:
        (board,) = leaderboards(s, families(), threat_models())
    marked = {v.label: v.d_key.significant for v in view(board).rows if not v.reference}
    assert marked == {"l1_filter": True, "hrank": False, "random_filter": False}
    assert {v.label: v.d_key.p_value < 0.05 for v in view(board).rows if not v.reference} == {"l1_filter": True, "hrank": True, "random_filter": False}


def test_robust_accuracy_among_correct_images_takes_the_clean_loss_out(store: Store, tmp_path: Path) -> None:
    """Control: 80 correct, 40 robust (50 %); l1_filter: 60 correct, 30 robust (50 %, though 10 points less robust);
    hrank: 80 correct, 48-52 robust (60-65 %)."""

    def job(clean: int, robust: int) -> list[Metric]:
        return [Metric("clean_acc", clean / N), accuracy_metric("clean_acc_eval", _mask(clean)),
                accuracy_metric("worst_case_acc", _mask(robust), "linf", EPS), accuracy_metric("robust_acc", _mask(robust), "pgd_linf", EPS)]

    for seed in range(3):
        add_job(store, f"c{seed}", "dense_finetuned", 0.0, seed, job(80, 40), params=_params("dense_finetuned", seed, 0.0))
        add_job(store, f"l{seed}", "l1_filter", 0.5, seed, job(60, 30), params=_params("l1_filter", seed, 0.5))
        add_job(store, f"h{seed}", "hrank", 0.5, seed, job(80, 48 + 2 * seed), params=_params("hrank", seed, 0.5))
    lines = report(store).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Robust accuracy among the evaluation images"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[head + 2 :]))
    assert table[0].split("|")[4].strip() == "worst case 8/255 among correct"
    cells = {c[1]: c[3] for line in table[2:] if (c := [x.strip() for x in line.strip("|").split("|")])}
    assert cells == {"l1_filter": "50.0 (+0.0; per seed +0.0, +0.0, +0.0)", "hrank": "62.5 (+12.5; per seed +10.0, +12.5, +15.0)"}
    # The site shows the same numbers, from the same view.
    from harness.site.build import build_site

    page = (build_site(store, tmp_path / "site").parent / "index.html").read_text()
    table = page[page.index('<table class="among-correct">') : page.index("</table>", page.index('<table class="among-correct">'))]
    rows = {m[0]: m[1:] for m in re.findall(r'<th scope="row">(\w+)</th><td>a</td><td>0.50</td><td>([^<]*)(?:<[^>]+>[^<]*)*?</td><td>([+-][\d.]+)', table)}
    assert rows == {"l1_filter": ("50.0", "+0.0"), "hrank": ("62.5", "+12.5")}


def test_family_significant_leaves_rows_short_of_seeds_out_of_the_family() -> None:
    """Two rows with 3 seeds form the family (Holm thresholds 0.025, 0.05); a 2-seed row neither counts nor tightens them."""
    from harness.store.statistics import PairedTest, family_significant

    def t(p: float | None, seeds: int = 3) -> PairedTest:
        return PairedTest(0.01, p, seeds, (0.01,) * seeds, 1, 0)

    assert family_significant([t(0.02), t(0.04), t(0.5, seeds=2), t(1e-9, seeds=2), None, t(None)]) == [True, True, False, False, False, False]
    assert family_significant([t(0.02), t(0.04), t(0.5)]) == [False, False, False]  # three in the family: 0.02 >= 0.05 / 3


def test_report_gives_each_stage_wall_time_over_seeds(store: Store) -> None:
    for seed, secs in enumerate((100.0, 140.0, 120.0)):
        timing = [Metric("train_seconds", 4000.0 + seed), Metric("finetune_seconds", secs), Metric("attack_seconds", 2 * secs, attack="pgd_linf")]
        add_job(store, f"p{seed}", "l1_filter", 0.5, seed, _job(_mask(40)) + timing, params=_params("l1_filter", seed, 0.5))
        # A second row on the same dense models: their training counts once in the total.
        add_job(store, f"q{seed}", "l1_filter", 0.3, seed, _job(_mask(40)) + timing[:2] + [Metric("eval_seconds", 1000.0)],
                params=_params("l1_filter", seed, 0.3))
    lines = report(store).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Wall time of each stage"))
    table = [[c.strip() for c in line.strip("|").split("|")] for line in itertools.takewhile(lambda x: x.startswith("|"), lines[head + 2 :])]
    assert table[0] == ["architecture", "pruner", "sparsity", "dense training", "pruning", "fine-tuning", "pgd_linf", "evaluation"]
    assert ["a", "l1_filter", "0.5", "4,000-4,002", "–", "100-140", "200-280", "–"] in table
    assert ["a", "l1_filter", "0.3", "4,000-4,002", "–", "100-140", "–", "1,000"] in table
    assert table[-1] == ["all", "total of 6 jobs", "", "12,003", "0", "720", "720", "3,000"]
    hours = (12_003 + 720 + 3_000) / 3600
    assert f"In all {hours:,.1f} worker-hours: dense training (3 models)" in lines[head + 2 + len(table) + 1]


def test_report_shows_seeds_and_no_mark_with_two_seeds(store: Store) -> None:
    _study(store, 2)
    text = report(store)
    row = next(line for line in text.splitlines() if "| l1_filter |" in line and "p=" in line)
    assert "+10.0 [+10.0, +10.0]" in row and "**" not in row
    assert "fewer than 3 seeds" in text


def test_report_marks_rows_of_an_older_protocol(store: Store) -> None:
    add_job(store, "d0", "none", 0.0, 0, _job(_mask(20)))  # params without a protocol: version 1
    assert "none †" in report(store)
    assert math.isfinite(binomial_two_sided(1, 3))


def test_report_regenerates_only_the_tables_of_a_page(store: Store, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli.main import app

    _study(store, 3)
    page = tmp_path / "study.md"
    page.write_text("# Study\n\nHand-written reading.\n\n## Tables\n\nstale numbers\n")
    args = ["report", "--db", str(store.path), "--out", str(page), "--section", "Tables"]
    assert CliRunner().invoke(app, args).exit_code == 0
    text = page.read_text()
    assert text.startswith("# Study\n\nHand-written reading.\n\n## Tables\n") and "stale numbers" not in text
    assert "\n### " in text and "| l1_filter |" in text and text.count("\n## ") == 1  # the boards sit one level down
    assert CliRunner().invoke(app, args).exit_code == 0 and page.read_text() == text  # idempotent
    page.write_text("# Study\n\nno tables heading\n")
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code != 0 and "## Tables" in bad.output and page.read_text() == "# Study\n\nno tables heading\n"
