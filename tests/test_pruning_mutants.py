"""Tests written against surviving pruning mutants: each pins which filters, blocks or weights go, and how many.

Every expected value is known by construction (hand-set weights whose norms, ranks or distances order the filters),
or computed by a hand-written definition independent of the code under test, on tiny nets with no dataset and no GPU.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch_pruning as tp
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.plugins import pruners
from harness.api.pruner import PruneContext, Pruner, filter_counts
from harness.pruning.criteria import KLImportance, TaylorImportance
from harness.pruning.layers import _apportion, block_kl, removable_blocks

# ---- helpers ----


def conv_bn_net() -> nn.Sequential:
    """conv(1->5)-BN-ReLU-conv(5->4)-BN-ReLU-pool-linear, seeded; the first conv is usually the layer under test."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
        nn.Conv2d(5, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10),
    ).eval()


def ctx_for(x: Tensor, y: Tensor | None = None, batch: int = 4) -> PruneContext:
    """A context whose calibration is `x` (and labels `y`) cut into batches of `batch`."""
    y = torch.zeros(len(x), dtype=torch.long) if y is None else y
    return PruneContext(example_inputs=x[:2], calibration=[(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)])


def surviving(before: Tensor, after: Tensor) -> list[int]:
    """Which filters of `before` remain in `after`, matched by exact weights."""
    return [i for i in range(len(before)) if any(torch.equal(before[i], w) for w in after)]


def prune_first(name: str, net: nn.Module, sparsity: float = 0.2, ctx: PruneContext | None = None, **kw: Any) -> list[int]:
    """Prune `net` locally with the registered pruner `name`; the surviving filters of its first conv."""
    before = net[0].weight.detach().clone()
    pruners.get(name).obj(global_ranking=False, **kw).prune(net, sparsity, ctx or ctx_for(torch.rand(8, 1, 8, 8)))
    return surviving(before, net[0].weight.detach())


def first_conv_group(net: nn.Module, x: Tensor) -> tuple[list[Any], Any]:
    """torch-pruning's groups of `net` (Linear outputs ignored) and the one rooted at its first conv."""
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=x)
    groups = list(graph.get_all_groups(ignored_layers=[m for m in net.modules() if isinstance(m, nn.Linear)], root_module_types=[nn.Conv2d]))
    return groups, next(g for g in groups if g[0].dep.target.module is net[0])


# ---- weight criteria: l1, l2, FPGM, |gamma| ----


def test_l1_is_the_sum_of_absolute_weights_per_filter() -> None:
    """l1 = [9, 5, 7.2, 4.8, 18]: filter 3 goes (a signed sum or a max |w| would drop filter 2 instead)."""
    net = conv_bn_net()
    w = torch.zeros(5, 1, 3, 3)
    w[0] = 1.0
    w[1, 0, 0, 0] = 5.0
    w[2] = 0.8 * torch.tensor([(-1.0) ** i for i in range(9)]).view(1, 3, 3)  # 5 positive, 4 negative
    w[3].view(-1)[:4] = 1.2
    w[4] = 2.0
    net[0].weight.data = w.clone()
    assert prune_first("l1_filter", net) == [0, 1, 2, 4]
    assert torch.equal(net[0].weight.detach(), w[[0, 1, 2, 4]])


def test_l2_is_the_euclidean_norm_per_filter() -> None:
    """l2 = [3, 1.8, 3, 6, 9] (l1 = [3, 5.4, 9, 18, 27]): the Euclidean norm drops filter 1, an L1 norm filter 0."""
    net = conv_bn_net()
    w = torch.zeros(5, 1, 3, 3)
    w[0, 0, 1, 1] = 3.0
    w[1] = 0.6
    w[2], w[3], w[4] = 1.0, 2.0, 3.0
    net[0].weight.data = w
    assert prune_first("l2_filter", net) == [0, 2, 3, 4]


def test_fpgm_drops_the_filter_with_the_smallest_sum_of_distances() -> None:
    """Filters at 1, 2, 3, 4, 21 along one line: distance sums 29, 26, 25, 26, 80, so filter 2 (the median) goes.

    The smallest largest-distance (filter 3: 17) or squared-distance sum (nearest the mean 6.2: filter 3) differ.
    """
    net = conv_bn_net()
    direction = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(1))
    net[0].weight.data = torch.stack([s * direction for s in (1.0, 2.0, 3.0, 4.0, 21.0)])
    assert prune_first("fpgm", net) == [0, 1, 3, 4]


def test_bn_scale_ranks_by_the_magnitude_of_gamma() -> None:
    """gamma = [0.9, -2, 0.05, 0.7, 0.3]: |gamma| is smallest at 2; the large negative gamma at 1 must stay."""
    net = conv_bn_net()
    net[1].weight.data = torch.tensor([0.9, -2.0, 0.05, 0.7, 0.3])
    assert prune_first("bn_scale", net) == [0, 1, 3, 4]


# ---- activation criteria: calibration data and the HRank rank ----


def one_by_one_net(weights: list[float]) -> nn.Sequential:
    """conv1x1(1->3, no bias, weights as given)-ReLU-pool-linear: channel c's activation is relu(w_c x)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    net[0].weight.data = torch.tensor(weights).view(3, 1, 1, 1)
    return net


def signed_batches() -> Tensor:
    """Two images of +1, then two of -3: with weights [1, -1, 0.5], mean relu is [1, 0, 0.5] then [0, 3, 0]."""
    return torch.cat([torch.ones(2, 1, 4, 4), -3.0 * torch.ones(2, 1, 4, 4)])


def test_expected_abs_averages_every_calibration_batch() -> None:
    """Over all four images the means are [0.5, 1.5, 0.25]: channel 2 goes (the first batch alone would drop 1)."""
    net = one_by_one_net([1.0, -1.0, 0.5])
    assert prune_first("expected_abs", net, 0.34, ctx_for(signed_batches(), batch=2), images=None) == [0, 1]


def test_expected_abs_reads_only_the_first_images_it_is_given() -> None:
    """images=2 keeps the first batch only: means [1, 0, 0.5], channel 1 goes."""
    net = one_by_one_net([1.0, -1.0, 0.5])
    assert prune_first("expected_abs", net, 0.34, ctx_for(signed_batches(), batch=2), images=2) == [0, 2]


def test_hrank_drops_the_lowest_rank_feature_map() -> None:
    """Identity 1x1 conv over three positive images of rank 3, 2, 1: the rank-1 map (channel 2) goes, not the first."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    net[0].weight.data = torch.eye(3).view(3, 3, 1, 1)
    g = torch.Generator().manual_seed(0)

    def of_rank(r: int) -> Tensor:
        # Small integers: the products and sums are exact in float32, so the rank is exactly r at any tolerance.
        return sum(torch.randint(1, 5, (6, 1), generator=g).float() @ torch.randint(1, 5, (1, 6), generator=g).float() for _ in range(r))  # type: ignore[return-value]

    x = torch.stack([torch.stack([of_rank(3), of_rank(2), of_rank(1)]) for _ in range(4)])
    before = net[0].weight.detach().clone()
    pruners.get("hrank").obj(global_ranking=False, images=4).prune(net, 0.34, ctx_for(x))
    assert surviving(before, net[0].weight.detach()) == [0, 1]


def test_pls_vip_represents_a_filter_by_the_max_of_its_map() -> None:
    """Channel 0 is one bright pixel (class 0) or the same total spread evenly (class 1): its global max separates the
    classes while its mean is constant, so with max pooling it is the most label-relevant channel and stays."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    net[0].weight.data = torch.eye(3).view(3, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 4, 4, generator=g)
    y = torch.arange(16) % 2
    x[:, 0] = 9.0 / 16
    x[y == 0, 0] = 0.0
    x[y == 0, 0, 1, 2] = 9.0
    before = net[0].weight.detach().clone()
    pruners.get("pls_vip").obj(global_ranking=False, images=None).prune(net, 0.34, ctx_for(x, y, batch=8))
    assert 0 in surviving(before, net[0].weight.detach())


# ---- Taylor and KL scores against their definitions ----


def scored_net_and_data() -> tuple[nn.Sequential, list[tuple[Tensor, Tensor]]]:
    """conv_bn_net with random BN affine parameters and two labelled batches of noise."""
    net = conv_bn_net()
    g = torch.Generator().manual_seed(3)
    net[1].weight.data = torch.randn(5, generator=g)
    net[1].bias.data = torch.randn(5, generator=g)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    return net, [(x[:4], y[:4]), (x[4:], y[4:])]


def test_vip_weighs_each_component_by_the_label_variance_it_explains() -> None:
    """VIP_j^2 = p sum_k SS_k (w_jk / ||w_k||)^2 / sum_k SS_k with SS_k = ||t_k||^2 ||q_k||^2, written out term by term
    from the fitted PLS model's scores, loadings and weights (the scores' norms differ across components here)."""
    import numpy as np
    from sklearn.cross_decomposition import PLSRegression

    from harness.pruning.criteria import vip_scores

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 120)
    x = rng.normal(size=(120, 5))
    x[:, 1] += 2.0 * y
    x[:, 3] += (y == 2) * 1.5
    onehot = (y[:, None] == np.arange(3)[None, :]).astype(np.float64)
    pls = PLSRegression(n_components=3, scale=True).fit(x, onehot)
    t, q, w = pls.x_scores_, pls.y_loadings_, pls.x_weights_
    ss = [sum(t[i, k] ** 2 for i in range(120)) * sum(q[c, k] ** 2 for c in range(3)) for k in range(3)]
    assert max(ss) / min(ss) > 2  # the components explain very different amounts
    norms = [sum(w[j, k] ** 2 for j in range(5)) ** 0.5 for k in range(3)]
    want = [(5 * sum(ss[k] * (w[j, k] / norms[k]) ** 2 for k in range(3)) / sum(ss)) ** 0.5 for j in range(5)]
    assert np.allclose(vip_scores(x, y, components=3), want)


def test_taylor_is_the_mean_over_batches_of_the_squared_gate_gradient() -> None:
    """Importance = mean over minibatches of (dL/dgate)^2, with a unit gate multiplied into the first BN's output."""
    net, batches = scored_net_and_data()
    expected = []
    for x, y in batches:
        gate = torch.ones(1, 5, 1, 1, requires_grad=True)
        handle = net[1].register_forward_hook(lambda _m, _i, o: o * gate)
        nn.functional.cross_entropy(net(x), y).backward()
        handle.remove()
        expected.append(gate.grad.flatten() ** 2)  # type: ignore[union-attr]
    net.zero_grad(set_to_none=True)
    groups, root = first_conv_group(net, batches[0][0][:1])
    imp = TaylorImportance()
    imp.prepare(net, PruneContext(example_inputs=batches[0][0][:1], calibration=batches), groups)
    assert torch.allclose(imp(root), torch.stack(expected).mean(0), rtol=1e-4, atol=1e-9)


class _Residual(nn.Module):
    """stem conv(1->4)-BN-ReLU, one basic block whose second BN is added to the stem's output, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv0, self.bn0 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn0(self.conv0(x)))
        h = F.relu(h + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h))))))
        return self.fc(h.mean((2, 3)))


def test_taylor_sums_the_gate_gradient_over_a_residual_stream_before_squaring() -> None:
    """A residual channel's score is the mean over minibatches of (dL/dgate)^2 for ONE gate shared by the stem BN and
    the block's last BN (pruning removes the channel from both); per-layer squares or the root layer alone differ."""
    net = _Residual().eval()
    g = torch.Generator().manual_seed(5)
    for bn in (net.bn0, net.bn1, net.bn2):
        bn.weight.data = torch.randn(4, generator=g)
        bn.bias.data = torch.randn(4, generator=g)
    x, y = torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 10, (8,), generator=g)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    shared, alone = [], []
    for xb, yb in batches:
        gate = torch.ones(1, 4, 1, 1, requires_grad=True)
        handles = [bn.register_forward_hook(lambda _m, _i, o: o * gate) for bn in (net.bn0, net.bn2)]
        F.cross_entropy(net(xb), yb).backward()
        for h in handles:
            h.remove()
        shared.append(gate.grad.flatten() ** 2)  # type: ignore[union-attr]
        gate0 = torch.ones(1, 4, 1, 1, requires_grad=True)
        handle = net.bn0.register_forward_hook(lambda _m, _i, o: o * gate0)
        F.cross_entropy(net(xb), yb).backward()
        handle.remove()
        alone.append(gate0.grad.flatten() ** 2)  # type: ignore[union-attr]
    net.zero_grad(set_to_none=True)
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=x[:1])
    groups = list(graph.get_all_groups(ignored_layers=[net.fc], root_module_types=[nn.Conv2d]))
    stream = next(grp for grp in groups if any(it.dep.target.module is net.bn2 for it in grp))
    imp = TaylorImportance()
    imp.prepare(net, PruneContext(example_inputs=x[:1], calibration=batches), groups)
    want = torch.stack(shared).mean(0)
    assert not torch.allclose(want, torch.stack(alone).mean(0), rtol=1e-2)  # the second layer matters here
    assert torch.allclose(imp(stream), want, rtol=1e-4, atol=1e-9)


def test_kl_is_kl_of_the_pruned_from_the_intact_output() -> None:
    """Score of channel c = mean over images of KL(q || p), q the softmax with c zeroed after the first BN."""
    net, batches = scored_net_and_data()
    x = torch.cat([b[0] for b in batches])
    with torch.no_grad():
        log_p = torch.log_softmax(net(x), 1)
        expected = []
        for c in range(5):
            handle = net[1].register_forward_hook(lambda _m, _i, o, c=c: o * (torch.arange(5) != c).float().view(1, 5, 1, 1))
            log_q = torch.log_softmax(net(x), 1)
            handle.remove()
            expected.append((log_q.exp() * (log_q - log_p)).sum(1).mean())
    groups, root = first_conv_group(net, x[:1])
    imp = KLImportance(images=8, max_batch=8)  # one channel per forward: every chunk but the first starts past 0
    imp.prepare(net, PruneContext(example_inputs=x[:1], calibration=batches), groups)
    assert torch.allclose(imp(root), torch.stack(expected), rtol=1e-4, atol=1e-7)


# ---- how many filters go: rounding, schedules, global allocation ----


def scaled_conv_bn_net(first: float, second: float) -> nn.Sequential:
    """conv_bn_net with filter i of the first conv = first x (i+1) x ones, of the second = second x (i+1) x ones."""
    net = conv_bn_net()
    net[0].weight.data = torch.stack([first * (i + 1) * torch.ones(1, 3, 3) for i in range(5)])
    net[3].weight.data = torch.stack([second * (i + 1) * torch.ones(5, 3, 3) for i in range(4)])
    return net


def widths(net: nn.Module) -> list[int]:
    """Output channels of each conv."""
    return [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_local_rounding_is_half_up_per_layer() -> None:
    """0.3 x 5 = 1.5 rounds to 2 filters gone, 0.3 x 4 = 1.2 to 1; the smallest-l1 filters go."""
    net = scaled_conv_bn_net(1.0, 1.0)
    assert prune_first("l1_filter", net, 0.3) == [2, 3, 4]
    assert widths(net) == [3, 3]


def test_local_pruning_keeps_one_filter_of_a_two_filter_layer() -> None:
    """0.8 x 2 rounds to 2, but a layer keeps at least one filter."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    pruners.get("l1_filter").obj().prune(net, 0.8, ctx_for(torch.rand(2, 1, 8, 8)))
    assert widths(net) == [1, 1]
    assert net(torch.rand(1, 1, 8, 8)).shape == (1, 3)


def test_global_rounding_reaches_the_nearest_filter_count() -> None:
    """0.3 x 9 filters = 2.7: three filters go, the three smallest of the whole network (all in the first conv)."""
    net = scaled_conv_bn_net(0.01, 1.0)
    before = net[0].weight.detach().clone()
    pruners.get("l1_filter").obj(global_ranking=True).prune(net, 0.3, ctx_for(torch.rand(2, 1, 8, 8)))
    assert widths(net) == [2, 4]
    assert surviving(before, net[0].weight.detach()) == [3, 4]


def test_global_pruning_keeps_one_filter_of_the_weakest_layer() -> None:
    """0.6 x 9 = 5.4 -> 5 filters: the first conv's 5 are all weakest, yet one stays, so the second conv loses one."""
    net = scaled_conv_bn_net(0.01, 1.0)
    pruners.get("l1_filter").obj(global_ranking=True).prune(net, 0.6, ctx_for(torch.rand(2, 1, 8, 8)))
    assert widths(net) == [1, 3]


def test_iterative_global_pruning_ends_at_the_request() -> None:
    """Two steps to 0.6 of 9 filters: round(2.7) = 3 then round(5.4) = 5 in all, not 3 + 5."""
    net = scaled_conv_bn_net(1.0, 1.0)
    pruners.get("l1_filter").obj(schedule="iterative", steps=2, global_ranking=True).prune(net, 0.6, ctx_for(torch.rand(2, 1, 8, 8)))
    assert filter_counts(net) == 4


def test_a_shared_context_prunes_a_second_copy_like_the_first() -> None:
    """The memo shared by the prunes of one job must hold only the dense model's scores (an iterative run's later
    steps score a smaller model): a second iterative prune from the same dense model ends where the first did."""
    dense = scaled_conv_bn_net(1.0, 0.5)
    ctx = ctx_for(torch.rand(2, 1, 8, 8))
    first, second = copy.deepcopy(dense), copy.deepcopy(dense)
    for net in (first, second):
        pruners.get("l1_filter").obj(schedule="iterative", steps=2).prune(net, 0.6, ctx)
    assert widths(first) == widths(second) == [2, 2]
    assert torch.equal(first[0].weight, second[0].weight)


class Residual(nn.Module):
    """x + bn(conv(x)): its conv's filters are removed together with the input's channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn(self.conv(x))


def coupled_net(coupled_scale: float) -> nn.Sequential:
    """stem conv(1->4) + two residual convs (one coupled group: 3 filters per channel, 12 in all), then conv(4->3)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), Residual(4), Residual(4),
        nn.Conv2d(4, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2),
    ).eval()
    for conv in (net[0], net[3].conv, net[4].conv):
        conv.weight.data = torch.stack([coupled_scale * (i + 1) * torch.ones_like(conv.weight[0]) for i in range(4)])
    net[5].weight.data = torch.stack([(i + 1) * torch.ones(4, 3, 3) for i in range(3)])
    return net


def test_global_pruning_counts_every_filter_a_coupled_channel_removes() -> None:
    """0.2 x 15 filters = 3: one coupled channel (3 filters) is exactly enough, the last conv stays whole."""
    net = coupled_net(0.001)
    pruners.get("l1_filter").obj(global_ranking=True).prune(net, 0.2, ctx_for(torch.rand(2, 1, 8, 8)))
    assert widths(net) == [3, 3, 3, 3]


def test_global_pruning_does_not_overshoot_by_a_coupled_channel() -> None:
    """0.07 x 15 ~ 1 filter: a coupled channel would remove 3, so the weakest single filter of the last conv goes."""
    net = coupled_net(0.001)
    pruners.get("l1_filter").obj(global_ranking=True).prune(net, 0.07, ctx_for(torch.rand(2, 1, 8, 8)))
    assert widths(net) == [4, 4, 4, 2]


def test_a_oneshot_schedule_is_one_step_whatever_steps_says() -> None:
    """steps only matters for an iterative schedule."""
    pruner: Pruner = pruners.get("l1_filter").obj(schedule="oneshot", steps=3)
    assert pruner.step_targets(0.5) == [0.5]


# ---- layer (block) pruning ----


class OneConv(nn.Module):
    """x + conv(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


class TwoConv(nn.Module):
    """x + conv_b(conv_a(x)): twice the weights of OneConv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.b = nn.Conv2d(3, 3, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(self.a(x))


class BlockNet(nn.Module):
    """stem conv, stage1 of two blocks, stage2 of three blocks, pool, linear (stages are attributes, as in ResNets)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.stage1 = nn.Sequential(OneConv(), TwoConv())
        self.stage2 = nn.Sequential(OneConv(), OneConv(), OneConv())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage2(self.stage1(self.stem(x))))


def block_net() -> BlockNet:
    """A BlockNet whose block conv weights are all 0.01."""
    torch.manual_seed(0)
    net = BlockNet().eval()
    for stage in (net.stage1, net.stage2):
        for m in stage.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = torch.full_like(m.weight, 0.01)
    return net


def blocks_left(net: BlockNet) -> list[str]:
    """Names of the remaining blocks, e.g. "1.0" for stage1[0]."""
    return [f"{s}.{i}" for s, stage in ((1, net.stage1), (2, net.stage2)) for i, b in enumerate(stage) if not isinstance(b, nn.Identity)]


def test_removable_blocks_are_exactly_the_residual_ones() -> None:
    """Plain convs beside the residual blocks hold convs but add no input: only the residual blocks count."""
    assert [(b.stage, b.index) for b in removable_blocks(block_net())] == [("stage1", 0), ("stage1", 1), ("stage2", 0), ("stage2", 1), ("stage2", 2)]
    mixed = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), OneConv(), nn.Conv2d(3, 3, 1), OneConv())
    assert [b.index for b in removable_blocks(mixed)] == [1, 3]
    # A stage nested in a Sequential adds its input too (in its first block), but its output is its last block's:
    # it is not a block, and layer pruning must never replace it (that removed both blocks at once).
    nested = nn.Sequential(nn.Sequential(OneConv(), OneConv()), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    assert [(b.stage, b.index) for b in removable_blocks(nested)] == [("0", 0), ("0", 1)]
    pruners.get("layer_random").obj().prune(nested, 0.34, PruneContext(example_inputs=torch.rand(2, 3, 8, 8), seed=3))
    assert [isinstance(b, nn.Identity) for b in nested[0]].count(True) == 1
    # A stage of a single block is that block: counted once (the innermost), not twice.
    wrapped = nn.Sequential(nn.Sequential(OneConv()), nn.Conv2d(3, 3, 1), nn.Sequential(OneConv(), OneConv()))
    assert [(b.stage, b.index) for b in removable_blocks(wrapped)] == [("0", 0), ("2", 0), ("2", 1)]


def test_layer_l1_drops_the_block_with_the_smallest_mean_absolute_weight() -> None:
    """Means |w|: 80/81 (signs alternate, signed mean 0), 0.008 (two convs), 0.009, 1, 1: block 1.1 goes.

    Summing |w| would drop 2.0 (half the weights), a signed mean would drop 1.0.
    """
    net = block_net()
    w = net.stage1[0].conv.weight
    net.stage1[0].conv.weight.data = torch.tensor([(-1.0) ** i if i < 80 else 0.0 for i in range(w.numel())]).view_as(w)
    for conv in (net.stage1[1].a, net.stage1[1].b):
        conv.weight.data.fill_(0.008)
    net.stage2[0].conv.weight.data.fill_(0.009)
    for b in (net.stage2[1], net.stage2[2]):
        b.conv.weight.data.fill_(1.0)
    pruners.get("layer_l1").obj().prune(net, 0.2, ctx_for(torch.rand(2, 1, 8, 8)))
    assert blocks_left(net) == ["1.0", "2.0", "2.1", "2.2"]


def test_layer_pruning_rounds_half_up_and_drops_the_weakest() -> None:
    """0.3 x 5 blocks = 1.5: two blocks go, the two with the smallest mean |w|."""
    net = block_net()
    for b in (net.stage1[0], net.stage2[1], net.stage2[2]):
        for m in b.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.fill_(1.0)
    pruners.get("layer_l1").obj().prune(net, 0.3, ctx_for(torch.rand(2, 1, 8, 8)))
    assert blocks_left(net) == ["1.0", "2.1", "2.2"]


def test_local_iterative_layer_pruning_ends_at_the_request_one_block_per_stage() -> None:
    """Two steps to 0.4 of 5 blocks: one block per step, two in all, split 1 + 1 between the stages."""
    net = block_net()
    pruners.get("layer_l1").obj(schedule="iterative", steps=2, global_ranking=False).prune(net, 0.4, ctx_for(torch.rand(2, 1, 8, 8)))
    left = blocks_left(net)
    assert len(left) == 3
    assert sum(b.startswith("1.") for b in left) == 1 and sum(b.startswith("2.") for b in left) == 2


def test_apportion_splits_removals_by_largest_remainder_keeping_one_per_stage() -> None:
    """2 of (2, 3): exact 0.8 / 1.2 -> 1 + 1; 2 of (1, 3): a one-block stage keeps it -> 0 + 2."""
    assert _apportion(2, {"a": 2, "b": 3}) == {"a": 1, "b": 1}
    assert _apportion(2, {"a": 1, "b": 3}) == {"a": 0, "b": 2}


class PlainResidual(nn.Module):
    """x + conv(x) on `c` channels."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


def test_block_pls_vip_is_the_mean_vip_of_each_blocks_channels_across_widths() -> None:
    """Blocks of 3 and 6 channels: each block's score is the mean (not the sum) of its channels' VIPs, the channels
    represented by the max of their ReLU'd map, in one PLS model over every block's channels."""
    import numpy as np

    from harness.pruning.criteria import vip_scores
    from harness.pruning.layers import block_pls_vip

    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(PlainResidual(3), PlainResidual(3)), nn.Conv2d(3, 6, 1), nn.Sequential(PlainResidual(6)),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    x, y = torch.rand(40, 3, 6, 6), torch.arange(40) % 3
    blocks = removable_blocks(net)
    assert [b.module.conv.out_channels for b in blocks] == [3, 3, 6]  # type: ignore[union-attr]
    with torch.no_grad():
        h0 = net[0][0](x)
        h1 = net[0][1](h0)
        h2 = net[2][0](net[1](h1))
    feats = [torch.relu(h).amax((2, 3)).numpy() for h in (h0, h1, h2)]
    vip = vip_scores(np.concatenate(feats, 1), y.numpy(), 2)
    want = [vip[0:3].mean(), vip[3:6].mean(), vip[6:12].mean()]
    got = block_pls_vip(net, blocks, ctx_for(x, y, batch=8))
    assert np.allclose(got.numpy(), want, rtol=1e-5)


def test_block_kl_is_kl_of_the_skipped_from_the_intact_output() -> None:
    """Score of a block = mean over images of KL(q || p), q the softmax with that block replaced by identity."""
    net = block_net()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = 0.3 * torch.randn(m.weight.shape, generator=g)
    x = torch.rand(6, 1, 8, 8, generator=g)
    with torch.no_grad():
        log_p = torch.log_softmax(net(x), 1)
        expected = []
        for stage, i in (("stage1", 0), ("stage1", 1), ("stage2", 0), ("stage2", 1), ("stage2", 2)):
            skipped = copy.deepcopy(net)
            getattr(skipped, stage)[i] = nn.Identity()
            log_q = torch.log_softmax(skipped(x), 1)
            expected.append((log_q.exp() * (log_q - log_p)).sum(1).mean())
    got = block_kl(net, removable_blocks(net), ctx_for(x, batch=6), images=6)
    assert torch.allclose(got, torch.stack(expected), rtol=1e-4, atol=1e-8)


# ---- unstructured magnitude pruning ----


def magnitude_net() -> nn.Sequential:
    """conv(1->1, 3x3) with weights +-1..9, then linear(1->2) with weights [10, -0.5]: 11 prunable weights."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2, bias=False))
    net[0].weight.data = torch.tensor([1.0, -2, 3, -4, 5, -6, 7, -8, 9]).view(1, 1, 3, 3)
    net[3].weight.data = torch.tensor([[10.0], [-0.5]])
    return net


@pytest.mark.parametrize("name", ["global_magnitude", "layer_magnitude"])
def test_magnitude_pruning_zeroes_exactly_the_smallest_weights(name: str) -> None:
    """Half of 11 weights, half up: globally the 6 smallest |w| (0.5, 1..5); per layer 5 of 9 conv and 1 of 2 linear."""
    net = magnitude_net()
    pruner = pruners.get(name).obj()
    pruner.finalize(pruner.prune(net, 0.5, ctx_for(torch.rand(2, 1, 3, 3))))
    assert net[0].weight.flatten().tolist() == [0, 0, 0, 0, 0, -6, 7, -8, 9]
    assert net[3].weight.flatten().tolist() == [10.0, 0.0]
