"""Evaluation protocol: clean-misclassified examples, per-example worst case, stage and minimal-perturbation metrics."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from harness import Attack, register_attack
from harness.api.config import AttackSpec
from harness.api.data import ImageData
from harness.api.errors import AttackError
from harness.api.plugins import attacks
from harness.evaluation.protocol import median_perturbation, metrics_of
from harness.evaluation.runs import Evaluation, run_attacks


def test_run_attacks_protocol(trained_cnn: nn.Module, digits: ImageData) -> None:
    x, y = digits.x_test[:40], digits.y_test[:40].clone()
    y[:3] = (y[:3] + 1) % 10  # three examples the model now gets wrong
    specs = (AttackSpec("fgsm", (0.05, 0.2)), AttackSpec("deepfool", (0.5, 3.0), (("steps", 10),)))
    ev = run_attacks(trained_cnn, x, y, specs, torch.device("cpu"), 16, seed=0)
    assert not bool(ev.clean_correct[:3].any())
    for mask in ev.robust.values():
        assert not bool((mask & ~ev.clean_correct).any())  # never robust when wrong on the clean image
    assert bool(ev.robust[("fgsm", 0.2)].sum() <= ev.robust[("fgsm", 0.05)].sum())
    rows = {(m.metric, m.attack, m.eps): m.value for m in metrics_of(ev)}
    # No reference attack (AutoAttack; APGD or AutoAttack under L2) ran: no worst case may claim reference strength.
    assert not any(k[0] == "worst_case_acc" for k in rows)
    assert {(k[1], k[2]) for k in rows if k[0] == "worst_case_acc_lower_strength"} == {("linf", 0.05), ("linf", 0.2), ("l2", 0.5), ("l2", 3.0)}
    # Held as reference, DeepFool's L2 worst cases become reference strength; FGSM's Linf ones stay lower strength.
    named = {(m.metric, m.attack) for m in metrics_of(ev, {"l2": ("deepfool",)})}
    assert ("worst_case_acc", "l2") in named and ("worst_case_acc", "linf") not in named
    assert 0 < rows[("median_perturbation", "deepfool", -1)] < 3.0
    # A perturbation within eps fools at eps: robust at eps implies the found perturbation was larger.
    sizes = ev.perturbation["deepfool"]
    assert len(sizes) == int(ev.clean_correct.sum())
    assert requires_grad_restored(trained_cnn)


def requires_grad_restored(model: nn.Module) -> bool:
    return all(p.requires_grad for p in model.parameters()) and not model.training


def test_worst_case_is_per_example_minimum() -> None:
    ev = Evaluation(clean_correct=torch.ones(4, dtype=torch.bool))
    ev.robust[("a", 0.1)] = torch.tensor([True, True, False, False])
    ev.robust[("b", 0.1)] = torch.tensor([False, True, True, False])
    ev.threat.update(a="linf", b="linf")
    rows = {(m.metric, m.attack): m.value for m in metrics_of(ev, {"linf": ("a",)})}
    # Each attack leaves 50%, but only one example survives both.
    assert rows[("worst_case_acc", "linf")] == 0.25
    # A sanity check's stronger attack broke example 1 too: folded in, nothing survives.
    folds = {("linf", 0.1): torch.tensor([True, False, True, True])}
    rows = {(m.metric, m.attack): m.value for m in metrics_of(ev, {"linf": ("a",)}, folds)}
    assert rows[("worst_case_acc", "linf")] == 0.0


def test_accuracy_metrics_carry_their_outcomes() -> None:
    """Per-example outcomes are stored with accuracies, packed, and read back bit for bit (paired tests use them)."""
    from harness.api.metrics import unpack_outcomes

    ev = Evaluation(clean_correct=torch.tensor([True, True, False, True, True, True, False, True, True]))
    ev.robust[("a", 0.1)] = torch.tensor([True, False, False, True, False, True, False, False, True])
    ev.threat["a"] = "linf"
    for m in metrics_of(ev):
        if m.metric in ("clean_acc_eval", "robust_acc", "worst_case_acc_lower_strength"):
            back = unpack_outcomes(m.outcomes, m.n_examples)
            src = ev.clean_correct if m.metric == "clean_acc_eval" else ev.robust[("a", 0.1)]
            assert back.tolist() == src.tolist() and m.value == pytest.approx(back.mean())


def test_stage_metrics_and_median() -> None:
    ev = Evaluation(clean_correct=torch.ones(2, dtype=torch.bool))
    ev.robust[("autoattack", 0.1)] = torch.tensor([False, False])
    ev.stages[("autoattack/apgd-ce", 0.1)] = torch.tensor([True, False])
    ev.threat["autoattack"] = "linf"
    names = {m.attack for m in metrics_of(ev) if m.metric == "robust_acc"}
    assert names == {"autoattack", "autoattack/apgd-ce"}
    assert median_perturbation(torch.tensor([0.3, float("inf"), 0.1])) == pytest.approx(0.3)


class Cheater(Attack):
    """Leaves the eps-ball on purpose."""

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
        return (x + 2 * eps).clamp(0, 1)


def test_out_of_ball_attack_is_refused(trained_cnn: nn.Module, digits: ImageData) -> None:
    register_attack("cheater_for_test")(Cheater)
    try:
        with pytest.raises(AttackError, match="exceeded"):
            run_attacks(trained_cnn, digits.x_test[:8], digits.y_test[:8], (AttackSpec("cheater_for_test", (0.1,)),), torch.device("cpu"), 8, 0)
    finally:
        attacks.unregister("cheater_for_test")
