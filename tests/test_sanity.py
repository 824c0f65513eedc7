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
    out: list[Metric] = sanity_metrics(model, x, y, ev, SPECS, CFG, torch.device("cpu"), seed=0)
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
                "flag_fgsm_stronger_than_pgd:fgsm", "flag_more_steps_stronger:pgd_linf", "flag_randomized_model:", "flag_probability_output:"):
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
