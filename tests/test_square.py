"""The harness's Linf Square Attack against pyautoattack's: the same random draws, hence the same images."""

from __future__ import annotations

import pytest
import torch
from pyautoattack.square import SquareAttack
from torch import Tensor, nn

from harness.api.data import ImageData, to_float
from harness.api.nets import frozen
from harness.attacks.square import p_selection, square_linf
from harness.evaluation.runs import check_in_ball

N = 48


@pytest.fixture(scope="module")
def xy(digits: ImageData) -> tuple[Tensor, Tensor]:
    """The first N digits test images and labels."""
    return to_float(digits.x_test[:N]), digits.y_test[:N]


@pytest.mark.parametrize("eps,queries,restarts", [(0.1, 300, 1), (0.15, 150, 2)])
def test_equals_reference(trained_cnn: nn.Module, xy: tuple[Tensor, Tensor], eps: float, queries: int, restarts: int) -> None:
    x, y = xy
    ref_attack = SquareAttack(trained_cnn, norm="Linf", n_queries=queries, eps=eps, p_init=0.8, n_restarts=restarts, seed=5,
                              verbose=False, resc_schedule=False, device="cpu")
    with frozen(trained_cnn), torch.random.fork_rng():
        ref = ref_attack.perturb(x, y)
        ours = square_linf(trained_cnn, x, y, eps, queries, 0.8, restarts, seed=5)
    # Draw for draw the reference's random search, with fooled examples frozen instead of re-indexed: same images.
    assert torch.equal(ours, ref)
    check_in_ball(ours, x, eps, "linf", "square")
    with torch.no_grad():
        fooled = trained_cnn(ours).argmax(1) != y
        clean_wrong = trained_cnn(x).argmax(1) != y
    assert int(fooled.sum()) > int(clean_wrong.sum())  # it does fool some correctly classified images
    assert torch.equal(ours[clean_wrong], x[clean_wrong])  # misclassified ones are returned as they came


def test_schedule_matches_reference() -> None:
    ref = SquareAttack(nn.Identity(), norm="Linf", eps=0.1, p_init=0.8, resc_schedule=False)
    for it in (0, 10, 11, 50, 51, 200, 201, 500, 1000, 2000, 4000, 4001, 6000, 8000, 8001, 9999):
        assert p_selection(0.8, it) == ref.p_selection(it), it
