"""Criteria against their definitions, on hand-built layers where the right answer is known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from harness.api.config import TrainConfig
from harness.api.data import ImageData, to_float
from harness.api.errors import PruningError
from harness.api.nets import Normalized, inner
from harness.api.plugins import architectures, pruners
from harness.api.pruner import PruneContext
from harness.evaluation.runs import accuracy
from harness.pruning.criteria import layer_features, mean_abs, vip_scores
from harness.pruning.filters import ScoredFilterPruner
from harness.pruning.layers import block_outputs, removable_blocks
from harness.pruning.ranking import lowest, lowest_first, mask_lowest
from harness.pruning.unstructured import prunable_weights
from harness.training.train import train


def two_conv_net() -> nn.Module:
    """conv(1->5)-BN-ReLU-conv(5->4)-BN-ReLU-pool-linear: the first conv is the layer under test."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
        nn.Conv2d(5, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
    )
    return Normalized(net, (0.5,), (0.25,)).eval()


def context(digits: ImageData, n: int = 64) -> PruneContext:
    """Digits calibration batches."""
    x, y = to_float(digits.x_train[:n]), digits.y_train[:n]
    return PruneContext(example_inputs=x[:2], calibration=[(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)])


def surviving(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Which of the original filters of `before` remain in `after` (matched by exact weights)."""
    return [i for i in range(len(before)) if any(torch.equal(before[i], w) for w in after)]


def prune_first_layer(name: str, model: nn.Module, digits: ImageData) -> list[int]:
    """Prune 20% (one of five filters) and return the indices of the first conv's surviving filters."""
    before = inner(model)[0].weight.detach().clone()
    pruners.get(name).obj(global_ranking=False).prune(model, 0.2, context(digits))
    return surviving(before, inner(model)[0].weight.detach())


def set_filters(model: nn.Module, scales: list[float]) -> None:
    """First conv's filter i = scales[i] x one shared random direction."""
    direction = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(1))
    inner(model)[0].weight.data = torch.stack([s * direction for s in scales])


def test_l1_removes_the_smallest_norm_filter(digits: ImageData) -> None:
    model = two_conv_net()
    set_filters(model, [3.0, 1.0, 0.2, 2.0, 5.0])
    assert prune_first_layer("l1_filter", model, digits) == [0, 1, 3, 4]


def test_l2_removes_the_smallest_norm_filter(digits: ImageData) -> None:
    model = two_conv_net()
    set_filters(model, [3.0, 1.0, 2.0, 0.2, 5.0])
    assert prune_first_layer("l2_filter", model, digits) == [0, 1, 2, 4]


def test_fpgm_removes_the_filter_nearest_the_geometric_median(digits: ImageData) -> None:
    """On a line the geometric median is the middle point: FPGM drops it where L1 would drop the smallest."""
    model = two_conv_net()
    set_filters(model, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert prune_first_layer("fpgm", copy.deepcopy(model), digits) == [0, 1, 3, 4]
    assert prune_first_layer("l1_filter", model, digits) == [1, 2, 3, 4]


def test_bn_scale_removes_the_smallest_gamma(digits: ImageData) -> None:
    model = two_conv_net()
    set_filters(model, [0.1, 1.0, 2.0, 3.0, 4.0])  # L1 would drop filter 0
    inner(model)[1].weight.data = torch.tensor([0.9, 0.5, -0.05, 0.7, 0.3])  # |gamma| smallest at 2
    assert prune_first_layer("bn_scale", model, digits) == [0, 1, 3, 4]


@pytest.mark.parametrize("name", ["taylor", "hrank", "expected_abs", "kl_divergence", "pls_vip"])
def test_data_driven_criteria_remove_a_dead_channel(name: str, digits: ImageData) -> None:
    """A channel whose BN output is constantly zero after ReLU has zero rank, activation, gate gradient,
    output influence and label relevance: every data-driven criterion must remove it first."""
    model = two_conv_net()
    set_filters(model, [0.1, 1.0, 2.0, 3.0, 4.0])  # L1 would drop filter 0; the dead channel is 3
    bn = inner(model)[1]
    bn.weight.data[3], bn.bias.data[3] = 0.0, -1.0
    assert prune_first_layer(name, model, digits) == [0, 1, 2, 4]


@pytest.mark.parametrize("name", ["l1_filter", "taylor", "hrank"])
def test_a_frozen_network_is_pruned_as_a_trainable_one_and_stays_frozen(name: str, digits: ImageData) -> None:
    """Freezing parameters (as for a fine-tuned backbone) must change neither what is pruned nor the freeze."""
    model = two_conv_net()
    set_filters(model, [0.1, 1.0, 2.0, 3.0, 4.0])
    bn = inner(model)[1]
    bn.weight.data[3], bn.bias.data[3] = 0.0, -1.0
    frozen = copy.deepcopy(model).requires_grad_(False)
    inner(frozen)[3].weight.requires_grad_(True)  # one layer left trainable: its flag must survive too
    assert prune_first_layer(name, frozen, digits) == prune_first_layer(name, model, digits)
    assert len(inner(frozen)[0].weight) == 4
    assert [n for n, p in frozen.named_parameters() if p.requires_grad] == ["net.3.weight"]
    assert all(p.grad is None for p in frozen.parameters())


def test_taylor_names_the_non_affine_batchnorm_it_cannot_read(digits: ImageData) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5, affine=False), nn.ReLU(),
        nn.Conv2d(5, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
    )
    with pytest.raises(PruningError, match=r"affine=False.*use l1_filter"):
        prune_first_layer("taylor", Normalized(net, (0.5,), (0.25,)).eval(), digits)


def test_vip_matches_its_definition() -> None:
    """The label-carrying feature gets the top VIP, and VIPs square-sum to the number of features."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    x = rng.normal(size=(200, 6))
    x[:, 4] += 3.0 * y
    vip = vip_scores(x, y, components=2)
    assert int(np.argmax(vip)) == 4
    assert np.isclose((vip**2).sum(), x.shape[1])


def test_global_magnitude_zeroes_exactly_the_smallest_weights_and_masks_survive_fine_tuning(digits: ImageData) -> None:
    model = two_conv_net()
    weights = torch.cat([m.weight.detach().abs().flatten() for m in prunable_weights(inner(model))])
    k = int(0.5 * weights.numel() + 0.5)  # half rounds up, as the pruner does
    threshold = weights.sort().values[k - 1]
    pruner = pruners.get("global_magnitude").obj()
    pruner.prune(model, 0.5, context(digits))
    for m in prunable_weights(inner(model)):
        kept = m.weight.detach() != 0
        assert bool((m.weight_orig.detach().abs()[kept] >= threshold).all())
    train(model, digits, TrainConfig(epochs=1, batch_size=128, lr=0.05), seed=0, device=torch.device("cpu"), n_train=256)
    model = pruner.finalize(model)
    assert not any(hasattr(m, "weight_orig") for m in prunable_weights(inner(model)))
    zeros = sum(int((m.weight == 0).sum()) for m in prunable_weights(inner(model)))
    assert zeros == k


def test_layer_magnitude_prunes_each_layer_equally(digits: ImageData) -> None:
    model = two_conv_net()
    pruners.get("layer_magnitude").obj().prune(model, 0.5, context(digits))
    for m in prunable_weights(inner(model)):
        assert int((m.weight == 0).sum()) == int(0.5 * m.weight.numel() + 0.5)


@pytest.fixture(scope="module")
def trained_resnet(digits: ImageData) -> nn.Module:
    """resnet20 trained briefly on digits (well above chance)."""
    torch.manual_seed(0)
    model = Normalized(architectures.get("resnet20").obj(num_classes=10, in_channels=1), digits.mean, digits.std)
    train(model, digits, TrainConfig(epochs=3, batch_size=64, lr=0.05), seed=0, device=torch.device("cpu"), n_train=640)
    return model.eval()


def test_layer_l1_removes_the_chosen_block_and_the_network_still_runs(trained_resnet: nn.Module, digits: ImageData) -> None:
    model = copy.deepcopy(trained_resnet)
    blocks = removable_blocks(inner(model))
    target = blocks[3].module
    for m in target.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data *= 1e-3
    pruner = pruners.get("layer_l1").obj()
    pruner.prune(model, 1 / len(blocks), context(digits))
    assert target not in set(inner(model).modules())
    assert len(removable_blocks(inner(model))) == len(blocks) - 1
    assert model(to_float(digits.x_test[:4])).shape == (4, 10)


def test_layer_kl_removes_a_silent_block_and_accuracy_is_unchanged(trained_resnet: nn.Module, digits: ImageData) -> None:
    """A block whose residual branch outputs zero changes nothing (KL 0): it goes first, accuracy stays."""
    model = copy.deepcopy(trained_resnet)
    blocks = removable_blocks(inner(model))
    target = blocks[1].module
    target.bn2.weight.data.zero_()
    target.bn2.bias.data.zero_()
    x, y = to_float(digits.x_test), digits.y_test
    before = accuracy(model, x, y, torch.device("cpu")).float().mean()
    pruners.get("layer_kl_divergence").obj().prune(model, 1 / len(blocks), context(digits))
    assert target not in set(inner(model).modules())
    assert torch.isclose(accuracy(model, x, y, torch.device("cpu")).float().mean(), before)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["layer_random", "layer_expected_abs", "layer_pls_vip"])
def test_block_criteria_remove_blocks_and_the_network_still_classifies(name: str, trained_resnet: nn.Module, digits: ImageData) -> None:
    """Two of seven blocks removed and one short fine-tuning epoch: the network beats chance (10%) clearly."""
    model = copy.deepcopy(trained_resnet)
    n = len(removable_blocks(inner(model)))
    pruners.get(name).obj().prune(model, 2 / n, context(digits, 128))
    assert len(removable_blocks(inner(model))) == n - 2
    train(model, digits, TrainConfig(epochs=1, batch_size=64, lr=0.02), seed=1, device=torch.device("cpu"), n_train=640)
    acc = accuracy(model, to_float(digits.x_test), digits.y_test, torch.device("cpu")).float().mean()
    assert acc > 0.3


# ---- one ranking for every pruner: lowest score first, ties to the lower position ----


def test_ranking_breaks_ties_by_position_and_puts_nan_last() -> None:
    scores = torch.tensor([1.0, 0.0, float("nan"), 0.0, -0.0, 2.0, 0.0])
    assert lowest_first(scores).tolist() == [1, 3, 4, 6, 0, 5, 2]
    assert lowest(scores, 2) == [1, 3]
    assert lowest(scores, 0) == [] and lowest(scores, -3) == []
    mask = mask_lowest(scores.view(7, 1), 3)
    assert mask.shape == (7, 1) and mask.flatten().tolist() == [1, 0, 1, 0, 0, 1, 1]


def test_ranking_matches_the_sort_every_pruner_used_before() -> None:
    """The old per-pruner rule, sorted by (score, index), on scores full of ties: same order exactly."""
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 300):
        scores = torch.randint(0, 4, (n,), generator=g).float() / 3
        reference = sorted(range(n), key=lambda i: (float(scores[i]), i))
        assert lowest_first(scores).tolist() == reference


class ConstantScore(ScoredFilterPruner):
    """Every filter scores the same: only the tie-break decides."""

    def score(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.zeros(weight.shape[0])


@pytest.mark.parametrize("global_ranking", [False, True])
def test_filter_ties_remove_the_first_channels(global_ranking: bool, digits: ImageData) -> None:
    """Equal scores: the lowest channel indices go; globally, all from the first group in torch-pruning's order
    (it lists the second conv's group first), so the choice never depends on anything but positions."""
    model = two_conv_net()
    first, second = (inner(model)[i].weight.detach().clone() for i in (0, 3))
    ConstantScore(global_ranking=global_ranking).prune(model, 2 / 9, context(digits))
    kept_first = surviving(first, inner(model)[0].weight.detach())
    kept_second = surviving(second[:, kept_first], inner(model)[3].weight.detach())
    assert (kept_first, kept_second) == (([0, 1, 2, 3, 4], [2, 3]) if global_ranking else ([1, 2, 3, 4], [1, 2, 3]))


# ---- one forward-hook collector for filter and block criteria ----


class AddConv(nn.Module):
    """x + conv(x): a removable residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def test_layer_and_block_features_are_relu_features_of_each_output_over_all_batches() -> None:
    """300 images (three forward batches): each block's features equal feature(relu(output)) computed directly."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), AddConv(3), AddConv(3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10)).eval()
    x = torch.randn(300, 1, 8, 8)
    blocks = removable_blocks(net)
    assert [b.index for b in blocks] == [1, 2]
    with torch.no_grad():
        expected = [mean_abs(torch.relu(net[: b.index + 1](x))) for b in blocks]
    got = block_outputs(net, blocks, x, mean_abs)
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, expected))
    conv = layer_features(net, [net[0]], x, lambda a: a.amax((2, 3)), batch_size=128)[net[0]]
    with torch.no_grad():
        assert torch.allclose(conv, torch.relu(net[0](x)).amax((2, 3)), atol=1e-6)
    assert not any(m._forward_hooks for m in net.modules())
