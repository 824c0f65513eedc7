"""Sanity flags: a gradient-masked model is caught, the honest model is not."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from harness.api.config import AttackSpec, EvalConfig
from harness.api.data import ImageData
from harness.api.metrics import Metric
from harness.evaluation.runs import run_attacks
from harness.evaluation.sanity import eps_monotonic, sanity_metrics

SPECS = (AttackSpec("fgsm", (0.1, 0.2)), AttackSpec("pgd_linf", (0.1, 0.2), (("steps", 5),)))
CFG = EvalConfig(n_examples=48, batch_size=48, sanity_examples=16)


class Quantized(nn.Module):
    """Rounds pixels to 4 levels before the model: piecewise constant, so every input gradient is zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * 3) / 3)


def flags(model: nn.Module, digits: ImageData) -> dict[str, float]:
    x, y = digits.x_test[:48], digits.y_test[:48]
    ev = run_attacks(model, x, y, SPECS, torch.device("cpu"), 48, seed=0)
    out, _folds = sanity_metrics(model, x, y, ev, SPECS, CFG, torch.device("cpu"), seed=0)
    assert all(m.metric.startswith("flag_") and m.value in (0.0, 1.0) and m.eps == -1 for m in out)
    return {f"{m.metric}:{m.attack}": m.value for m in out}


def test_masked_gradient_model_is_flagged(trained_cnn: nn.Module, digits: ImageData) -> None:
    f = flags(Quantized(trained_cnn).eval(), digits)
    assert f["flag_zero_gradients:"] == 1.0
    assert f["flag_unbounded_eps:pgd_linf"] == 1.0
    assert f["flag_gradient_masking:"] == 1.0  # Square, needing no gradient, beats FGSM and PGD


def test_honest_model_passes(trained_cnn: nn.Module, digits: ImageData, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.evaluation.sanity

    # Fewer Square queries keep the test short; a weaker black-box probe can only make a false alarm less likely.
    monkeypatch.setattr(harness.evaluation.sanity, "SQUARE_QUERIES", 300)
    f = flags(trained_cnn, digits)
    raised = [k for k, v in f.items() if v]
    assert raised == []
    for key in ("flag_zero_gradients:", "flag_unbounded_eps:pgd_linf", "flag_gradient_masking:", "flag_eps_monotonic:fgsm",
                "flag_fgsm_stronger_than_pgd:fgsm", "flag_not_converged:pgd_linf", "flag_randomized_model:", "flag_probability_output:"):
        assert key in f


def test_eps_monotonic_flags_a_rising_curve() -> None:
    from harness.evaluation.runs import Evaluation

    ev = Evaluation(clean_correct=torch.ones(10, dtype=torch.bool))
    ev.robust[("a", 0.1)] = torch.tensor([True] * 3 + [False] * 7)
    ev.robust[("a", 0.2)] = torch.tensor([True] * 6 + [False] * 4)
    ev.threat["a"], ev.white_box["a"] = "linf", True
    assert eps_monotonic(ev) == [Metric("flag_eps_monotonic", 1.0, attack="a")]


def test_fgsm_stronger_than_pgd_is_flagged() -> None:
    from harness.evaluation.runs import Evaluation
    from harness.evaluation.sanity import fgsm_vs_pgd

    ev = Evaluation(clean_correct=torch.ones(10, dtype=torch.bool))
    ev.robust[("fgsm", 0.1)] = torch.tensor([True] * 2 + [False] * 8)
    ev.robust[("pgd_linf", 0.1)] = torch.tensor([True] * 5 + [False] * 5)
    assert fgsm_vs_pgd(ev)[0].value == 1.0


def test_unconverged_pgd_is_flagged_and_folded(trained_cnn: nn.Module, digits: ImageData) -> None:
    """PGD-10 with a step too small to cross the ball is beaten by 4x the steps: flagged, and its finds enter the worst case."""
    from harness.evaluation.protocol import metrics_of

    eps = 0.2
    # 10 steps of eps/40 travel a quarter of the ball: too few steps for this model.
    specs = (AttackSpec("pgd_linf", (eps,), (("step_size", eps / 40), ("steps", 10))),)
    cfg = EvalConfig(n_examples=48, batch_size=48, sanity_examples=48)
    x, y = digits.x_test[:48], digits.y_test[:48]
    ev = run_attacks(trained_cnn, x, y, specs, torch.device("cpu"), 48, seed=0)
    out, folds = sanity_metrics(trained_cnn, x, y, ev, specs, cfg, torch.device("cpu"), seed=0)
    f = {f"{m.metric}:{m.attack}": m.value for m in out}
    assert f["flag_not_converged:pgd_linf"] == 1.0
    weak = ev.robust[("pgd_linf", eps)].float().mean()
    worst = {m.metric: m.value for m in metrics_of(ev, {"linf": ("pgd_linf",)}, folds) if m.attack == "linf"}["worst_case_acc"]
    assert worst < float(weak) - 0.1  # the stronger run's adversarial examples count


def test_converged_pgd_is_not_flagged(trained_cnn: nn.Module, digits: ImageData) -> None:
    """PGD-40 with its default step size is not beaten by PGD-160 with 5 restarts on this model."""
    specs = (AttackSpec("pgd_linf", (0.2,), (("steps", 40),)),)
    cfg = EvalConfig(n_examples=48, batch_size=48, sanity_examples=48)
    x, y = digits.x_test[:48], digits.y_test[:48]
    ev = run_attacks(trained_cnn, x, y, specs, torch.device("cpu"), 48, seed=0)
    out, _ = sanity_metrics(trained_cnn, x, y, ev, specs, cfg, torch.device("cpu"), seed=0)
    assert {f"{m.metric}:{m.attack}": m.value for m in out}["flag_not_converged:pgd_linf"] == 0.0


def test_convergence_reads_autoattacks_apgd_stage_where_it_ran(trained_cnn: nn.Module, digits: ImageData, monkeypatch: pytest.MonkeyPatch) -> None:
    """With AutoAttack at the eps, its APGD-CE stage judges the PGD entry: flagged and folded, no extra PGD run."""
    import harness.evaluation.sanity as sanity

    eps = 0.2
    specs = (AttackSpec("pgd_linf", (eps,), (("step_size", eps / 40), ("steps", 10))), AttackSpec("autoattack", (eps,), (("n_queries", 50),)))
    cfg = EvalConfig(n_examples=48, batch_size=48, sanity_examples=48)
    x, y = digits.x_test[:48], digits.y_test[:48]
    ev = run_attacks(trained_cnn, x, y, specs, torch.device("cpu"), 48, seed=0)
    stage = ev.stages[("autoattack/apgd-ce", eps)]
    assert stage.float().mean() < ev.robust[("pgd_linf", eps)].float().mean() - 0.1  # APGD-100 beats this PGD-10

    def no_probe(*_a: object, **_k: object) -> Tensor:
        raise AssertionError("the convergence check ran an attack AutoAttack had already run")

    monkeypatch.setattr(sanity, "_probe", no_probe)
    monkeypatch.setattr(sanity, "probe_eps", lambda *_a: None)  # the black-box probe is another check
    out, folds = sanity_metrics(trained_cnn, x, y, ev, specs, cfg, torch.device("cpu"), seed=0)
    assert {f"{m.metric}:{m.attack}": m.value for m in out}["flag_not_converged:pgd_linf"] == 1.0
    assert torch.equal(folds[("linf", eps)], stage)


def _aa_evaluation(after_square: int) -> object:
    """An AutoAttack run on 10 examples: 6 left by APGD-CE, 5 by APGD-T and FAB-T, `after_square` by Square."""
    from harness.evaluation.runs import Evaluation

    ev = Evaluation(clean_correct=torch.ones(10, dtype=torch.bool))
    ev.params["autoattack"], ev.threat["autoattack"], ev.white_box["autoattack"] = {"version": "standard"}, "linf", True
    for stage, left in (("apgd-ce", 6), ("apgd-t", 5), ("fab-t", 5), ("square", after_square)):
        ev.stages[(f"autoattack/{stage}", 0.1)] = torch.arange(10) < left
    ev.robust[("autoattack", 0.1)] = torch.arange(10) < after_square
    return ev


def test_autoattack_stage_checks() -> None:
    """pyautoattack's checks on our runs: Square finding more than the gradient attacks, too few classes for targets."""
    from harness.evaluation.sanity import autoattack_stage_checks

    def flags(after_square: int, n_classes: int) -> dict[str, float]:
        return {m.metric: m.value for m in autoattack_stage_checks(_aa_evaluation(after_square), n_classes)}  # type: ignore[arg-type]

    assert flags(5, 10) == {"flag_autoattack_n_classes": 0.0, "flag_autoattack_square": 0.0}
    assert flags(3, 10)["flag_autoattack_square"] == 1.0  # Square broke 2 of 10 the gradient attacks left
    assert flags(5, 3)["flag_autoattack_n_classes"] == 1.0  # targeted DLR needs more than 3 classes
