"""The harness's APGD against pyautoattack's: identical images without early stop, identical fooled sets with it."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from torch import Tensor, nn

from harness.api.data import ImageData, to_float
from harness.api.errors import AttackError
from harness.api.nets import frozen
from harness.api.plugins import attacks
from harness.attacks.apgd import apgd, apgd_targeted
from harness.evaluation.runs import check_in_ball

N = 64
ITERS = 20  # checkpoints at 4, 7, 9, ... (k shrinks from 4 to 1): every branch of the step-size schedule runs


@pytest.fixture(scope="module")
def xy(digits: ImageData) -> tuple[Tensor, Tensor]:
    """The first N digits test images and labels."""
    return to_float(digits.x_test[:N]), digits.y_test[:N]


def fooled(model: nn.Module, adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(adv).argmax(1) != y


CASES = [("Linf", 0.08, "ce"), ("Linf", 0.08, "dlr"), ("L2", 0.6, "ce"), ("L2", 0.6, "dlr")]


@pytest.mark.parametrize("norm,eps,loss", CASES)
def test_untargeted_equals_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], norm: str, eps: float, loss: str) -> None:
    x, y = xy
    with frozen(trained_cnn):
        ref = APGDAttack(trained_cnn, n_iter=ITERS, norm=norm, eps=eps, seed=3, loss=loss, n_restarts=2, device="cpu").perturb(x, y)
        full = apgd(trained_cnn, x, y, eps, norm, loss, n_iter=ITERS, n_restarts=2, seed=3, early_stop=False)
        early = apgd(trained_cnn, x, y, eps, norm, loss, n_iter=ITERS, n_restarts=2, seed=3, early_stop=True)
    # Same operations in the same order on the same random start: the very same images, bit for bit.
    assert torch.equal(full, ref)
    # Early stop returns the first fooling iterate instead of the last one: the same examples end up fooled.
    assert torch.equal(fooled(trained_cnn, early, y), fooled(trained_cnn, ref, y))
    check_in_ball(early, x, eps, norm.lower(), "apgd")
    clean_ok = ~fooled(trained_cnn, x, y)
    assert 0 < int((fooled(trained_cnn, early, y) & clean_ok).sum()) < int(clean_ok.sum())  # a budget where it matters
    # Clean-misclassified examples are returned unchanged, as by the reference.
    assert torch.equal(early[~clean_ok], x[~clean_ok])


@pytest.mark.parametrize("norm,eps", [("Linf", 0.08), ("L2", 0.6)])
def test_targeted_equals_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], norm: str, eps: float) -> None:
    x, y = xy
    with frozen(trained_cnn):
        ref = APGDAttack_targeted(trained_cnn, n_iter=ITERS, norm=norm, eps=eps, seed=1, n_target_classes=3, device="cpu").perturb(x, y)
        full = apgd_targeted(trained_cnn, x, y, eps, norm, n_iter=ITERS, n_target_classes=3, seed=1, early_stop=False)
        early = apgd_targeted(trained_cnn, x, y, eps, norm, n_iter=ITERS, n_target_classes=3, seed=1, early_stop=True)
    assert torch.equal(full, ref)
    assert torch.equal(fooled(trained_cnn, early, y), fooled(trained_cnn, ref, y))


def test_random_state_untouched(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    x, y = xy
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with frozen(trained_cnn):
        apgd(trained_cnn, x[:8], y[:8], 0.05, n_iter=3, seed=7)
    # Its own generator: the caller's random stream is not reseeded (the reference reseeds the global one).
    assert torch.equal(torch.rand(3), expected)


def test_plugin_validates_and_runs(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor]) -> None:
    cls = attacks.get("apgd").obj
    with pytest.raises(AttackError, match="unknown loss 'xent'"):
        cls(loss="xent")
    x, y = xy
    attack = cls(loss="dlr-targeted", n_iter=10, n_target_classes=2)
    with frozen(trained_cnn):
        adv = attack.perturb(trained_cnn, x, y, 0.1)
    check_in_ball(adv, x, 0.1, "linf", "apgd")
    assert int(fooled(trained_cnn, adv, y).sum()) > int(fooled(trained_cnn, x, y).sum())
