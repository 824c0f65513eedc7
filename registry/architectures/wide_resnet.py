"""Wide residual networks (Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016), pre-activation blocks."""

from torch import Tensor, nn

from harness import register_architecture


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; 1x1 projection shortcut from the pre-activated input where shapes change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        """conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut."""
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-k: a 16-filter stem, 3 stages of (depth-4)/6 blocks with 16k, 32k, 64k filters."""

    def __init__(self, depth: int, widen: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        stages, cin = [], 16
        for i, cout in enumerate((16 * widen, 32 * widen, 64 * widen)):
            stages.append(nn.Sequential(*[WideBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]))
            cin = cout
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Stem, three stages, final BN-ReLU, global pooling, classifier."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(self.relu(self.bn(x))).flatten(1))


@register_architecture("wrn16_4", paper="Zagoruyko & Komodakis, BMVC 2016")
def wrn16_4(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WRN-16-4 (~2.75 M parameters): a small wide ResNet, the CPU-sized reference for robust models."""
    return WideResNet(16, 4, num_classes, in_channels)


@register_architecture("wrn28_4", paper="Zagoruyko & Komodakis, BMVC 2016")
def wrn28_4(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WRN-28-4 (~5.85 M parameters): the depth used by adversarial-training papers, at a quarter of WRN-28-10's width."""
    return WideResNet(28, 4, num_classes, in_channels)


@register_architecture("wrn28_10", paper="Zagoruyko & Komodakis, BMVC 2016")
def wrn28_10(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WRN-28-10 (~36.5 M parameters): RobustBench's standard CIFAR-10 model (`robustbench:cifar10/Linf/Standard`)."""
    return WideResNet(28, 10, num_classes, in_channels)
