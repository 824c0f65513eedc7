"""The harness's FAB against pyautoattack's: identical images without early stop, identical fooled sets with it."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.fab_pt import FABAttack_PT
from torch import Tensor, nn

from harness.api.data import ImageData, to_float
from harness.api.nets import frozen
from harness.attacks.fab import fab
from harness.evaluation.runs import check_in_ball

N = 32
ITERS = 12


@pytest.fixture(scope="module")
def xy(digits: ImageData) -> tuple[Tensor, Tensor]:
    """The first N digits test images and labels."""
    return to_float(digits.x_test[:N]), digits.y_test[:N]


def fooled(model: nn.Module, adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(adv).argmax(1) != y


# FAB-T with three targets, and untargeted FAB with a random restart (the second restart draws its start).
@pytest.mark.parametrize("norm,eps,targeted,restarts", [("Linf", 0.08, True, 1), ("L2", 0.6, True, 1), ("Linf", 0.08, False, 2)])
def test_equals_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], norm: str, eps: float, targeted: bool, restarts: int) -> None:
    x, y = xy
    ref_attack = FABAttack_PT(trained_cnn, norm=norm, n_restarts=restarts, n_iter=ITERS, eps=eps, seed=2, targeted=targeted,
                              n_target_classes=3, device="cpu")
    with frozen(trained_cnn), torch.random.fork_rng():
        ref = ref_attack.perturb(x, y)
        full = fab(trained_cnn, x, y, eps, norm, targeted, ITERS, restarts, 3, seed=2, early_stop=False)
        early = fab(trained_cnn, x, y, eps, norm, targeted, ITERS, restarts, 3, seed=2, early_stop=True)
    # One forward pass per step instead of two, the same arithmetic: the same images, bit for bit.
    assert torch.equal(full, ref)
    # Early stop keeps a point within eps instead of shrinking it further: the same examples end up fooled.
    assert torch.equal(fooled(trained_cnn, early, y), fooled(trained_cnn, ref, y))
    check_in_ball(early, x, eps, norm.lower(), "fab")
    clean_ok = ~fooled(trained_cnn, x, y)
    assert int((fooled(trained_cnn, early, y) & clean_ok).sum()) > 0
    assert torch.equal(early[~clean_ok], x[~clean_ok])
