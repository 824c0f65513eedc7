"""Tests written against surviving mutants: each pins a behaviour that a one-token change of the code broke unnoticed.

Every expected value is computed independently of the code under test (textbook tables, a hand-written binomial or
likelihood, counts by hand), on tiny data, with no datasets and no trained model.
"""

from __future__ import annotations

import math
import statistics as pystats
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from harness.api.config import PROTOCOL_VERSION, EvalConfig
from harness.api.data import ImageData, subset_indices
from harness.api.errors import HarnessError, PruningError
from harness.api.metrics import Metric
from harness.engine.budget import finetune_epochs
from harness.evaluation import measure
from harness.evaluation.measure import (
    count_nonzero,
    count_params,
    file_size,
    latency_ms,
)
from harness.evaluation.protocol import median_perturbation, metrics_of
from harness.evaluation.runs import Evaluation
from harness.site.board import Setup, families, threat_models
from harness.site.findings import (
    Tally,
    largest_gain,
    limits,
    reduced_budget,
    split,
    tally,
    verdict_grid,
)
from harness.store.boards import WORST, Board, Column, leaderboards
from harness.store.compare import compare_jobs, find_job
from harness.store.queries import JobRecord, MetricKey
from harness.store.session import Store
from harness.store.statistics import ACC, Estimate, paired_test, t_quantile
from tests.test_boards import add_job, linf
from tests.test_site import CONTROL_PROV, aa, aa_params

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


# --- harness/store/statistics.py ---------------------------------------------------------------------------------


def test_t_quantile_with_odd_degrees_of_freedom() -> None:
    """Four or six seeds give df 3 or 5: the odd-df branch of the exact t distribution (textbook two-sided 95 %)."""
    for df, t in ((3, 3.182446), (5, 2.570582), (7, 2.364624), (9, 2.262157)):
        assert t_quantile(df) == pytest.approx(t, abs=1e-6)
    e = Estimate.of([0.1, 0.2, 0.3, 0.4])  # sd 0.1291, 4 seeds, df 3
    assert e is not None and e.half_width == pytest.approx(3.182446 * pystats.stdev([0.1, 0.2, 0.3, 0.4]) / 2, abs=1e-6)


def test_interval_is_clipped_only_where_it_leaves_the_range() -> None:
    """Per seed 1.0, 0.98, 0.6: the upper end is clipped to 1, the lower end (inside [0, 1]) is the plain t bound."""
    xs = [1.0, 0.98, 0.6]
    e = Estimate.of(xs, ACC)
    assert e is not None and e.low is not None
    half = 4.302653 * pystats.stdev(xs) / math.sqrt(3)  # t(0.975, 2) from the tables
    assert e.low == pytest.approx(pystats.mean(xs) - half, abs=1e-6) and 0.2 < e.low < 0.4
    assert e.high == 1.0
    # A delta's interval is clipped to [-1, 1] at both ends.
    d = Estimate.of([-0.9, 0.9], (-1.0, 1.0))
    assert d is not None and (d.low, d.high) == (-1.0, 1.0)


def _outcomes(gained: int, lost: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    mine, ref = np.zeros(n, bool), np.zeros(n, bool)
    mine[:gained] = True
    ref[gained : gained + lost] = True
    return mine, ref


def _tango(gained: int, lost: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Tango's score interval from its definition: the restricted MLE by bisection on the likelihood's derivative."""

    def q_hat(d: float) -> float:
        # Maximise g log(q + d) + l log(q) + (n - g - l) log(1 - 2q - d) over q in (max(0, -d), (1 - d) / 2).
        lo, hi = max(0.0, -d), (1.0 - d) / 2.0
        rest = n - gained - lost
        for _ in range(200):
            q = (lo + hi) / 2.0
            slope = (gained / (q + d) if gained else 0.0) + (lost / q if lost else 0.0) - (2 * rest / (1 - 2 * q - d) if rest else 0.0)
            lo, hi = (q, hi) if slope > 0 else (lo, q)
        return (lo + hi) / 2.0

    def score(d: float) -> float:
        return (gained - lost - n * d) / math.sqrt(n * (2 * q_hat(d) + d - d * d))

    def root(target: float, lo: float, hi: float) -> float:  # score decreases in d
        for _ in range(100):
            mid = (lo + hi) / 2.0
            lo, hi = (mid, hi) if score(mid) > target else (lo, mid)
        return (lo + hi) / 2.0

    point = (gained - lost) / n
    return root(z, -1.0 + 1e-12, point), root(-z, point, 1.0 - 1e-12)


@pytest.mark.parametrize("gained, lost, n", [(7, 2, 40), (12, 3, 50), (5, 1, 20), (2, 9, 60)])
def test_paired_interval_is_tangos_score_interval(gained: int, lost: int, n: int) -> None:
    """The closed-form restricted MLE agrees with the likelihood maximised numerically, at both ends."""
    t = paired_test([(0.0, 0.0, *_outcomes(gained, lost, n))])
    assert t is not None
    iv = t.interval()
    assert iv is not None
    lo, hi = iv
    want_lo, want_hi = _tango(gained, lost, n)
    assert lo == pytest.approx(want_lo, abs=1e-6) and hi == pytest.approx(want_hi, abs=1e-6)


def test_paired_interval_without_discordant_pairs_by_hand() -> None:
    """No image changes: the bound solves n d / (1 - d) = z^2, so d = z^2 / (n + z^2)."""
    t = paired_test([(0.5, 0.5, *_outcomes(0, 0, 100))])
    assert t is not None and t.interval() == pytest.approx((-Z95**2 / (100 + Z95**2), Z95**2 / (100 + Z95**2)), abs=1e-9)


def test_p_value_needs_every_seeds_outcomes() -> None:
    """One seed without per-example outcomes: the p-value of the others alone would speak for too few pairs."""
    mine, ref = _outcomes(10, 0, 50)
    t = paired_test([(0.2, 0.0, mine, ref), (0.2, 0.0, None, None), (0.2, 0.0, mine, ref)])
    assert t is not None and t.p_value is None and t.n_pairs == 0 and not t.significant and t.interval() is None
    assert t.delta == pytest.approx(0.2) and t.n_seeds == 3


def test_a_row_and_reference_attacked_on_other_images_are_not_paired() -> None:
    """A seed whose row and reference outcomes differ in length (other evaluation images) cannot be paired image by
    image: no p-value, and no pairing by broadcasting a single outcome over the other's images."""
    mine, ref = _outcomes(4, 2, 10)
    for other in (np.zeros(9, bool), np.zeros(1, bool)):
        t = paired_test([(0.4, 0.2, mine, ref), (0.5, 0.0, mine, other)])
        assert t is not None and t.p_value is None and t.n_pairs == 0
        assert t.delta == pytest.approx((0.2 + 0.5) / 2)


def test_empty_outcomes_give_no_interval() -> None:
    t = paired_test([(0.0, 0.0, np.zeros(0, bool), np.zeros(0, bool))])
    assert t is not None and t.p_value == 1.0 and t.n_pairs == 0 and t.interval() is None


# --- harness/store/compare.py ------------------------------------------------------------------------------------

E1, E8 = 1 / 255, 8 / 255


def _job(key: str, accs: dict[MetricKey, list[bool]], dataset: str = "cifar10", protocol: int = 3, n_examples: int = 6) -> JobRecord:
    """A done job with the given per-example outcomes (and the accuracies they give)."""
    params: dict[str, Any] = {"eval": {"n_examples": n_examples}, "protocol": protocol}
    rec = JobRecord(key, dataset, "resnet20", "none", "none", 0.0, 0, "dk", params, {}, None, None, None, 1, None)
    for mk, bits in accs.items():
        rec.outcomes[mk] = np.array(bits, bool)
        rec.metrics[mk] = float(np.mean(bits))
    return rec


CLEAN: MetricKey = ("clean_acc_eval", "", None)
YES, NO = [True] * 6, [False] * 6


def test_compare_refuses_another_dataset_or_protocol() -> None:
    a = _job("a", {CLEAN: YES})
    for other, what in ((_job("b", {CLEAN: NO}, dataset="cifar100"), "dataset"), (_job("b", {CLEAN: NO}, protocol=2), "protocol version")):
        with pytest.raises(HarnessError, match=f"differ in {what}"):
            compare_jobs(a, other)
    rows, _ = compare_jobs(a, _job("b", {CLEAN: NO}))  # the same three: compared
    assert [(r.test.gained, r.test.lost) for r in rows] == [(6, 0)]


def test_a_worst_case_counts_whole_attacks_at_its_own_eps() -> None:
    """AutoAttack at 8/255 only, with its stages: the worst case at 1/255 is over FGSM alone in both jobs, so it compares."""
    ours: dict[MetricKey, list[bool]] = {("robust_acc", "fgsm", E1): YES, ("robust_acc", "fgsm", E8): YES, ("robust_acc", "autoattack", E8): YES,
            ("robust_acc", "autoattack/apgd-ce", E8): YES, ("worst_case_acc", "linf", E1): YES, ("worst_case_acc", "linf", E8): YES}
    theirs: dict[MetricKey, list[bool]] = {("robust_acc", "fgsm", E1): NO, ("robust_acc", "fgsm", E8): NO, ("worst_case_acc", "linf", E1): NO, ("worst_case_acc", "linf", E8): NO}
    rows, skipped = compare_jobs(_job("a", ours), _job("b", theirs))
    assert [r.metric for r in rows] == [("worst_case_acc", "linf", E1), ("robust_acc", "fgsm", E1), ("robust_acc", "fgsm", E8)]
    # At 8/255 only A ran AutoAttack: left out, naming whole attacks (not AutoAttack's stages).
    assert skipped == [(("worst_case_acc", "linf", E8), ["autoattack", "fgsm"], ["fgsm"])]
    # Both ran AutoAttack, one recorded its stages: the same attack set, so the worst case compares.
    theirs[("robust_acc", "autoattack", E8)] = NO
    rows, skipped = compare_jobs(_job("a", ours), _job("b", theirs))
    assert ("worst_case_acc", "linf", E8) in [r.metric for r in rows] and not skipped


def test_compare_lists_clean_then_worst_case_then_each_attack_then_the_rest() -> None:
    keys: list[MetricKey] = [("worst_case_acc_lower_strength", "l2", 0.5), ("robust_acc", "pgd", E8), ("robust_acc", "fgsm", E8),
                             ("worst_case_acc", "linf", E8), CLEAN, ("robust_acc", "autoattack", E8)]
    rows, _ = compare_jobs(_job("a", dict.fromkeys(keys, YES)), _job("b", dict.fromkeys(keys, NO)))
    assert [r.metric for r in rows] == [CLEAN, ("worst_case_acc", "linf", E8), ("robust_acc", "autoattack", E8),
                                        ("robust_acc", "fgsm", E8), ("robust_acc", "pgd", E8), ("worst_case_acc_lower_strength", "l2", 0.5)]


def test_compare_with_nothing_comparable_says_so() -> None:
    """The only shared accuracy is a worst case over other attacks: an error, not an empty table."""
    a = _job("a", {("robust_acc", "autoattack", E8): YES, ("worst_case_acc", "linf", E8): YES})
    b = _job("b", {("robust_acc", "fgsm", E8): NO, ("worst_case_acc", "linf", E8): NO})
    with pytest.raises(HarnessError, match="share no accuracy"):
        compare_jobs(a, b)


def test_find_job_refuses_unfinished_jobs_and_reads_the_key_literally(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    add_job(store, "ab11", "none", 0.0, 0, linf(0.9, (0.5, 0.3)))
    add_job(store, "ac22", "none", 0.0, 1, linf(0.9, (0.5, 0.3)))
    run = store.start_run("g", "<memory>", 1, {})
    store.claim("ff33", run, {"dataset": "d", "architecture": "a", "pruner": "none", "pruner_label": "none", "sparsity": 0.0,
                              "seed": 2, "dense_key": "dk", "pruned_key": "pk", "params": {}})
    with store.session() as s:
        assert find_job(s, "ab").key == "ab11"
        with pytest.raises(HarnessError, match="job ff33 is not done"):
            find_job(s, "ff")
        for pattern in ("a_", "a%"):  # SQL wildcards are characters of a key, not patterns
            with pytest.raises(HarnessError, match="no job with a key starting"):
                find_job(s, pattern)
    store.close()


# --- harness/evaluation/protocol.py ------------------------------------------------------------------------------


def test_median_perturbation_is_the_lower_median() -> None:
    """An even count takes the lower of the two middle sizes: always one example's actual perturbation."""
    assert median_perturbation(torch.tensor([0.4, 0.1, 0.3, 0.2])) == pytest.approx(0.2)
    assert median_perturbation(torch.tensor([float("inf"), 0.1])) == pytest.approx(0.1)
    assert math.isnan(median_perturbation(torch.tensor([])))


def test_worst_case_has_reference_strength_only_at_the_eps_the_reference_ran() -> None:
    ev = Evaluation(clean_correct=torch.ones(4, dtype=torch.bool))
    ev.robust[("autoattack", E8)] = torch.tensor([True, False, False, False])
    ev.robust[("fgsm", E8)] = torch.tensor([True, True, False, False])
    ev.robust[("fgsm", E1)] = torch.tensor([True, True, True, False])
    ev.threat.update(autoattack="linf", fgsm="linf")
    rows = {(m.metric, m.eps): m.value for m in metrics_of(ev, {"linf": ("autoattack",)}) if m.attack == "linf"}
    assert rows == {("worst_case_acc", E8): 0.25, ("worst_case_acc_lower_strength", E1): 0.75}


def test_folding_a_sanity_attack_leaves_the_attacks_own_outcomes_alone() -> None:
    """With one attack the worst case starts from its outcomes: folding must not write into them."""
    ev = Evaluation(clean_correct=torch.ones(4, dtype=torch.bool))
    ev.robust[("pgd_linf", E8)] = torch.tensor([True, True, True, False])
    ev.threat["pgd_linf"] = "linf"
    folds = {("linf", E8): torch.tensor([False, True, True, True])}
    for _ in range(2):  # the same answer twice: the first call changed nothing it reads
        rows = {(m.metric, m.attack): m.value for m in metrics_of(ev, {"linf": ("pgd_linf",)}, folds)}
        assert rows[("robust_acc", "pgd_linf")] == 0.75 and rows[("worst_case_acc", "linf")] == 0.5
    assert ev.robust[("pgd_linf", E8)].tolist() == [True, True, True, False]


class _FirstPixel(nn.Module):
    """Class 1 where the first pixel is above 0.5, class 0 elsewhere: correctness is written into the images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = (x[:, 0, 0, 0] > 0.5).float()
        return torch.stack([1 - p, p], 1)


def test_evaluate_wires_clean_pass_config_folds_and_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate() with the attacks and sanity checks faked: what it hands them and what it makes of their answers."""
    from harness.evaluation import protocol

    n = 40
    x = torch.zeros(n, 1, 2, 2)
    x[:, 0, 1, 1] = torch.arange(n) / 100  # each image carries its index
    x[:, 0, 0, 0] = (torch.arange(n) % 4 != 0).float()  # 30 of 40 correct: clean accuracy 0.75
    y = torch.ones(n, dtype=torch.long)
    data = ImageData("toy", x, y, x, y, ["0", "1"], (0.0,), (1.0,))
    seen: dict[str, Any] = {}

    def run_attacks(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, specs: Any, device: Any, bs: Any, seed: int,
                    clean_correct: torch.Tensor, progress: Path | None = None) -> Evaluation:
        seen["index"] = (xs[:, 0, 1, 1] * 100).round().long()
        seen["clean"] = clean_correct
        robust = clean_correct & (seen["index"] % 2 == 1)
        return Evaluation(clean_correct=clean_correct, robust={("fgsm", E8): robust}, threat={"fgsm": "linf"}, resumed_seconds=12.5)

    def sanity_metrics(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, ev: Evaluation, specs: Any, cfg: EvalConfig,
                       device: Any, seed: int) -> tuple[list[Metric], dict[tuple[str, float], torch.Tensor]]:
        fold = torch.ones(len(ys), dtype=torch.bool)
        fold[int(ev.robust[("fgsm", E8)].nonzero()[0])] = False  # the stronger attack breaks one more image
        return [Metric("flag_test", 0.0)], {("linf", E8): fold}

    monkeypatch.setattr(protocol, "run_attacks", run_attacks)
    monkeypatch.setattr(protocol, "sanity_metrics", sanity_metrics)
    progress = tmp_path / "progress.pt"
    progress.write_bytes(b"saved")
    cfg = EvalConfig(n_examples=10, batch_size=4, sanity_examples=0, reference=(("linf", ("fgsm",)),))
    out = protocol.evaluate(_FirstPixel(), data, cfg, (), torch.device("cpu"), 0, progress=progress)

    index = seen["index"]
    drawn = subset_indices(n, 10, 0)
    assert drawn is not None and index.tolist() == drawn.tolist()  # the evaluation images of seed 0
    assert index.tolist() != list(range(10))
    assert seen["clean"].tolist() == (index % 4 != 0).tolist()  # the subset's own clean outcomes
    robust = (index % 4 != 0) & (index % 2 == 1)
    got = {(m.metric, m.attack, m.eps): m.value for m in out}
    assert out[0].metric == "clean_acc" and out[0].value == 0.75  # the whole test set, not the subset
    assert got[("robust_acc", "fgsm", E8)] == pytest.approx(robust.float().mean().item())
    # The grid's reference (fgsm) gives reference strength; the folded image comes off the worst case.
    assert got[("worst_case_acc", "linf", E8)] == pytest.approx((int(robust.sum()) - 1) / 10)
    assert not any(k[0] == "worst_case_acc_lower_strength" for k in got)
    assert got[("flag_test", "", -1.0)] == 0.0 and got[("eval_batch_size", "", -1.0)] == 4.0
    assert got[("eval_resumed_seconds", "", -1.0)] == 12.5
    assert not progress.exists()


# --- harness/evaluation/measure.py -------------------------------------------------------------------------------


def test_parameter_counts_by_hand() -> None:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.0, 5.0]))
    assert count_nonzero(lin) == 3 and count_params(lin) == 8
    # Batch norm's running statistics are buffers, not parameters: 2 x 9 + 2 conv, 2 + 2 batch norm.
    assert count_params(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))) == 24


def test_file_size_is_the_saved_state_dicts_bytes(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    # The archive inside a saved file is named after the file: "archive" is what an in-memory save uses too.
    torch.save(model.state_dict(), tmp_path / "archive.pt")
    assert file_size(model) == (tmp_path / "archive.pt").stat().st_size


class _Clock:
    """A perf_counter whose time only moves inside the model's forward, by a scripted amount per call."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Scripted(nn.Module):
    """Advances `clock` by a given time per call, in call order, and records the batches it saw."""

    def __init__(self, clock: _Clock, seconds: list[float]) -> None:
        super().__init__()
        self.clock, self.seconds, self.shapes = clock, list(seconds), []  # type: _Clock, list[float], list[tuple[int, ...]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.clock.now += self.seconds.pop(0)
        return x


def test_latency_is_the_median_of_the_timed_passes_in_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two slow warm-up passes (0.4 s) are not timed; the timed ones take 0.2, 0.02 and 0.1 s: the median is 100 ms."""
    clock = _Clock()
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    model = _Scripted(clock, [0.4, 0.4, 0.2, 0.02, 0.1])
    ms = latency_ms(model, torch.zeros(5, 1, 2, 2), batch=3, repeats=3, warmup=2)
    assert ms == pytest.approx(100.0)
    assert model.shapes == [(3, 1, 2, 2)] * 5 and not model.seconds  # `batch` copies of one example, every pass


# --- harness/engine/budget.py ------------------------------------------------------------------------------------


def test_budget_refuses_no_steps_and_negative_epochs_with_a_clear_error() -> None:
    with pytest.raises(PruningError, match="at least 1 step, got 0"):
        finetune_epochs(10, 0)
    with pytest.raises(PruningError, match="finetune.epochs must be >= 0, got -1"):
        finetune_epochs(-1, 2)
    assert finetune_epochs(0, 1) == [0] and finetune_epochs(1, 2) == [0, 1]


# --- harness/site/findings.py ------------------------------------------------------------------------------------


def _setup(**kw: Any) -> Setup:
    fields: dict[str, Any] = {"key": "k", "dataset": "cifar10", "n_train": None, "train_total": 50000, "epochs": 100,
                              "finetune_epochs": 10, "regime": "standard", "n_eval": 500, "seeds": [0, 1, 2], "eps": []}
    return Setup(**(fields | kw))


def test_reduced_budget_is_a_subset_of_the_training_images_or_a_dense_model_far_under_its_anchor() -> None:
    assert reduced_budget(_setup(n_train=50000)) == ""  # every training image: the full budget
    assert reduced_budget(_setup(n_train=5000)) == "dense models trained on 5,000 of the 50,000 training images"
    assert reduced_budget(_setup(dense_clean=[("resnet20", Estimate(0.85, None, 1), (0.9125, "paper"))])) == ""
    assert reduced_budget(_setup(dense_clean=[("resnet20", Estimate(0.80, None, 1), (0.9125, "paper"))])).startswith("dense resnet20 at 80.0 %")


def test_a_column_supports_the_claim_when_gains_lead_losses_and_match_the_unchanged_rows() -> None:
    col = (WORST, E8)
    assert Tally(col, up=1, same=1).word == "supports"  # as many gains as unchanged rows: supports
    assert Tally(col, up=1, same=2).word == "does not support"  # more rows unchanged than gained
    assert Tally(col, up=1, down=1).word == "does not support"
    assert Tally(col, down=2, same=2).word == "contradicts" and Tally(col, down=1, same=2).word == "does not support"


def _row(col: Column, test: Any, label: str = "p", sparsity: float = 0.5) -> SimpleNamespace:
    return SimpleNamespace(is_dense=False, is_control=False, vs_control={col: test}, pruner_label=label, sparsity=sparsity)


def test_tally_quotes_the_largest_p_among_the_significant_changes() -> None:
    """Holm over 3 rows: 1e-6 < 0.05 / 3 and 1e-3 < 0.05 / 2 are kept, 0.6 is not; "p <= 0.001" covers both gains."""
    col = (WORST, E8)
    rows = [_row(col, SimpleNamespace(delta=d, p_value=p, n_seeds=3)) for d, p in ((0.10, 1e-6), (0.05, 1e-3), (0.0, 0.6))]
    t = tally(rows, col)  # type: ignore[arg-type]
    assert (t.up, t.down, t.same) == (2, 0, 1) and t.p_significant == 1e-3 and t.p_other == 0.6
    assert "2 gain (p ≤ 0.001)" in t.text()


def test_largest_gain_is_the_bonferroni_one_sided_bound_over_the_rows() -> None:
    """Three rows: each upper bound at one-sided level 0.05 / 3, i.e. Tango's interval at z = Phi^-1(1 - 0.05 / 3)."""
    col = (WORST, E8)
    data = {"a": (7, 2, 40), "b": (2, 9, 60), "c": (3, 3, 50)}
    rows = [_row(col, paired_test([(0.0, 0.0, *_outcomes(*data[k]))]), label=k) for k in data]
    bound = largest_gain(rows, col)  # type: ignore[arg-type]
    assert bound is not None
    upper, row, k = bound
    z = pystats.NormalDist().inv_cdf(1 - 0.05 / 3)
    assert k == 3 and row.pruner_label == "a" and upper == pytest.approx(_tango(7, 2, 40, z)[1], abs=1e-6)
    assert upper > _tango(7, 2, 40, Z95)[1]  # wider than one row's own 95 % bound


def test_verdict_grid_lists_whole_attacks_not_the_stages_of_autoattack() -> None:
    cols: list[Column] = [(WORST, E8), ("autoattack", E8), ("autoattack/apgd-ce", E8)]
    test = SimpleNamespace(delta=0.0, p_value=1.0, n_seeds=3)
    board = Board("cifar10", "linf", cols, [SimpleNamespace(is_dense=False, is_control=False, vs_control=dict.fromkeys(cols, test))])  # type: ignore[list-item]
    eps, lines = verdict_grid(board)
    assert eps == [E8] and [name for name, _ in lines] == [WORST, "AutoAttack"]


def test_limits_name_a_saturated_reference_among_several_and_a_dense_model_at_its_anchor() -> None:
    """Two controls (two architectures): one keeps 1 % at 8/255, which alone leaves nothing to lose there."""
    col = (WORST, E8)

    def control(arch: str, robust: float) -> SimpleNamespace:
        return SimpleNamespace(architecture=arch, pruner="dense_finetuned", pruner_label="dense_finetuned", sparsity=0.0,
                               is_dense=False, is_control=True, jobs=[0, 1, 2], robust={col: Estimate(robust, None, 3)})

    board = Board("cifar10", "linf", [col], [control("resnet20", 0.30), control("vgg11", 0.01)])  # type: ignore[list-item]
    setup = _setup(dense_clean=[("resnet20", Estimate(0.9124, None, 3), (0.9125, "paper"))])
    text = "\n".join(limits(SimpleNamespace(board=board, setups=[setup], control="dense_finetuned", eps=[])))  # type: ignore[arg-type]
    assert "At ε=8/255 the reference row keeps 1.0 % worst-case robust accuracy" in text
    # 0.01 points under the published accuracy reads as reaching it, not as "0.0 points under".
    assert "The dense resnet20 reaches 91.2 % clean, at or above the published 91.2 %" in text


def test_split_puts_the_newer_protocol_first(tmp_path: Path) -> None:
    """Two converged setups with as many jobs: the one under the current protocol comes before the older one."""
    store = Store(tmp_path / "r.db")
    for grid, protocol, epochs in (("old", 1, 100), ("new", PROTOCOL_VERSION, 120)):
        for pruner, sparsity, prov in (("none", 0.0, None), ("dense_finetuned", 0.0, CONTROL_PROV), ("l1_filter", 0.5, None)):
            params = aa_params(0, pruner, sparsity) | {"protocol": protocol}
            params["pruned"]["dense"]["train"] = {"epochs": epochs, "regime": "standard"}  # type: ignore[index]
            add_job(store, f"{grid}-{pruner}", pruner, sparsity, 0, aa(0.90, 0.60, 0.10), dataset="cifar10", arch="resnet20",
                    params=params, provenance=prov, grid=grid, dense_key=f"{grid}-dense")
    with store.session() as s:
        (board,) = leaderboards(s, families(), threat_models())
    parts = split(board)
    assert [{j.grid for r in b.rows for j in r.jobs} for b in parts] == [{"new"}, {"old"}]
    store.close()
