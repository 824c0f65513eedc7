"""Architectures: sizes match the published figures, every one runs and survives filter pruning at 0.5."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
import torchvision
from torch import nn

from harness.api.plugins import architectures
from harness.evaluation.measure import count_macs, count_params

# name -> (input size, classes, published parameters, published MACs, relative tolerance). Sources: He et al. 2016
# Table 6 (CIFAR ResNets; MACs as tabulated by Li et al. 2017 and HRank, Lin et al. 2020), Li et al. 2017 / HRank
# for CIFAR VGG-16 (14.98 M, 313.73 M), Zagoruyko & Komodakis 2016 (WRN-16-4 2.7 M), torchvision's model cards
# (ResNet-18 11.69 M / 1.81 G, ResNet-50 25.56 M / 4.09 G). CIFAR ResNets here use 1x1 projection shortcuts
# (option B) instead of zero padding, which adds ~2 % MACs and <1 % parameters.
PUBLISHED = {
    "resnet20": (32, 10, 0.27e6, 40.8e6, 0.03),
    "resnet32": (32, 10, 0.46e6, 69.1e6, 0.03),
    "resnet56": (32, 10, 0.85e6, 125.5e6, 0.03),
    "resnet110": (32, 10, 1.72e6, 252.9e6, 0.03),
    "vgg16_bn": (32, 10, 14.98e6, 313.7e6, 0.01),
    "wrn16_4": (32, 10, 2.7e6, None, 0.03),
    "resnet18": (224, 1000, 11.69e6, 1.81e9, 0.01),
    "resnet50": (224, 1000, 25.56e6, 4.09e9, 0.01),
}


def _input_size(name: str) -> int:
    return PUBLISHED.get(name, (32,))[0]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_size_matches_published(name: str) -> None:
    size, classes, params, macs, tol = PUBLISHED[name]
    net = architectures.get(name).obj(num_classes=classes, in_channels=3).eval()
    assert count_params(net) == pytest.approx(params, rel=tol)
    if macs is not None:
        assert count_macs(net, torch.zeros(1, 3, size, size)) == pytest.approx(macs, rel=tol)


def test_mobilenetv2_matches_torchvision_structure() -> None:
    """Strides do not change parameters: the CIFAR variant must hold exactly torchvision's MobileNetV2 weights."""
    ours = architectures.get("mobilenetv2").obj(num_classes=10, in_channels=3)
    assert count_params(ours) == count_params(torchvision.models.mobilenet_v2(num_classes=10))
    # Stem and second stage at stride 1: ~93 M MACs at 32x32, the range pruning papers report for this variant.
    assert 85e6 < count_macs(ours.eval(), torch.zeros(1, 3, 32, 32)) < 100e6


def test_wrn28_4_depth_and_width() -> None:
    net = architectures.get("wrn28_4").obj(num_classes=10, in_channels=3)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 2 * 12 and max(c.out_channels for c in convs) == 256


@pytest.mark.parametrize("name", ["resnet20", "vgg16_bn", "mobilenetv2", "resnet18"])
def test_grey_inputs_and_class_count(name: str) -> None:
    size = 32 if name != "resnet18" else 64
    net = architectures.get(name).obj(num_classes=7, in_channels=1).eval()
    assert net(torch.rand(2, 1, size, size)).shape == (2, 7)


# Deep or wide ones take seconds each to trace on 2 cores: walked under -m slow.
DEEP = {"resnet50", "resnet110", "wrn28_4", "wrn28_10", "resnet56", "resnet32"}


def _prune_half(name: str) -> None:
    """torch-pruning's MetaPruner at 0.5 (l1 importance) follows every coupled layer; the result still trains."""
    size = 32 if _input_size(name) == 32 else 64
    torch.manual_seed(0)
    net = architectures.get(name).obj(num_classes=10, in_channels=3).eval()
    dense = count_params(net)
    tp.pruner.MetaPruner(
        net,
        torch.rand(1, 3, size, size),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[m for m in net.modules() if isinstance(m, nn.Linear)],
    ).step()
    assert count_params(net) < 0.5 * dense
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:  # depthwise convs keep one filter per channel
            assert m.groups == m.in_channels == m.out_channels
    net.train()
    net(torch.rand(4, 3, size, size)).sum().backward()


@pytest.mark.parametrize("name", sorted(set(architectures.names()) - DEEP))
def test_prunable_with_torch_pruning(name: str) -> None:
    _prune_half(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEEP))
def test_prunable_with_torch_pruning_deep(name: str) -> None:
    _prune_half(name)
