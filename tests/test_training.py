"""Training regimes: config validation, and adversarial training that really buys PGD robustness on digits."""

from __future__ import annotations

import pytest
import torch

from harness.api.config import TrainConfig
from harness.api.data import ImageData
from harness.api.errors import GridError
from harness.api.nets import Normalized, frozen
from harness.api.plugins import architectures, attacks
from harness.engine.grid import parse_grid
from harness.evaluation.runs import accuracy
from harness.training.train import adversarial_budget, train

CPU = torch.device("cpu")
# Small enough for the default run (a few CPU seconds per model): 500 training digits, 4 epochs, 3-step
# training attacks with step eps/2 so that 3 steps reach the budget's edge, 200 attacked test digits.
N_TRAIN, EPOCHS, EPS, N_TEST = 500, 4, 0.1, 200


def _trained(digits: ImageData, regime: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), digits.mean, digits.std)
    adv = {"adv_steps": 3, "adv_step_size": EPS / 2} if regime != "standard" else {}
    cfg = TrainConfig(epochs=EPOCHS, batch_size=64, lr=0.05, n_train=N_TRAIN, regime=regime, **adv)
    train(model, digits, cfg, seed=0, device=CPU, n_train=N_TRAIN)
    return model.eval()


def _pgd_accuracy(model: torch.nn.Module, digits: ImageData) -> float:
    """Robust accuracy under 10-step PGD at the dataset's Linf budget."""
    x, y = digits.x_test[:N_TEST], digits.y_test[:N_TEST]
    x_adv = attacks.get("pgd_linf").obj(steps=10, seed=1).perturb(model, x, y, EPS)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def standard_model(digits: ImageData) -> torch.nn.Module:
    """small_cnn trained on clean digits."""
    return _trained(digits, "standard")


def test_pgd_at_raises_pgd_robust_accuracy(digits: ImageData, standard_model: torch.nn.Module) -> None:
    robust = _trained(digits, "pgd_at")
    std_acc, at_acc = _pgd_accuracy(standard_model, digits), _pgd_accuracy(robust, digits)
    assert at_acc > std_acc + 0.15, (std_acc, at_acc)
    assert float(accuracy(robust, digits.x_test, digits.y_test, CPU).float().mean()) > 0.7  # still a classifier


def test_trades_raises_pgd_robust_accuracy(digits: ImageData, standard_model: torch.nn.Module) -> None:
    robust = _trained(digits, "trades")
    assert _pgd_accuracy(robust, digits) > _pgd_accuracy(standard_model, digits) + 0.1


def test_regime_validation_and_fractions() -> None:
    cfg = TrainConfig(regime="pgd_at", adv_eps="8/255", adv_step_size="2/255", adv_steps=10)
    assert cfg.adv_eps == pytest.approx(8 / 255) and cfg.adv_step_size == pytest.approx(2 / 255)
    with pytest.raises(GridError, match="unknown regime 'madry'; accepted: standard, pgd_at, trades"):
        TrainConfig(regime="madry")
    with pytest.raises(GridError, match="adv_steps only apply to adversarial regimes"):
        TrainConfig(adv_steps=10)
    with pytest.raises(GridError, match="adv_steps must be an integer >= 1"):
        TrainConfig(regime="trades", adv_steps=0)


def test_grid_regime_errors_name_the_grid_and_change_the_dense_key() -> None:
    base = {"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["none"], "attacks": [{"name": "fgsm", "eps": 0.1}]}
    with pytest.raises(GridError, match=r"grid <memory>: \[train\]: unknown regime"):
        parse_grid(base | {"train": {"regime": "at"}})
    std = parse_grid(base).jobs[0]
    at = parse_grid(base | {"train": {"regime": "pgd_at", "adv_eps": "8/255"}}).jobs[0]
    assert std.dense_key != at.dense_key


def test_budget_defaults_to_the_dataset(digits: ImageData) -> None:
    assert adversarial_budget(TrainConfig(regime="pgd_at"), digits) == (digits.eps_linf, digits.eps_linf / 4)
    assert adversarial_budget(TrainConfig(regime="pgd_at", adv_eps=0.2, adv_step_size=0.05), digits) == (0.2, 0.05)


def test_attacking_freezes_weights_and_keeps_bn_statistics(digits: ImageData) -> None:
    model = Normalized(architectures.get("small_cnn").obj(num_classes=10, in_channels=1), digits.mean, digits.std).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    with frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        model(digits.x_train[:32])
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert torch.equal(bn.running_mean, before)
