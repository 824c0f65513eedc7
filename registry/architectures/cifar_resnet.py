"""CIFAR ResNets (He et al., Deep Residual Learning for Image Recognition, CVPR 2016, section 4.2)."""

from torch import Tensor, nn

from harness import register_architecture


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        # Projection shortcut (option B) where shapes change: unlike option A's zero padding, torch-pruning
        # can follow it, so filter pruning stays consistent across the residual sum.
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3 stages of n basic blocks with 16, 32, 64 filters; depth = 6n + 2."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Stem, three stages, global pooling, classifier."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


@register_architecture("resnet20", paper="He et al., CVPR 2016")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-20 (3 x 3 basic blocks, ~0.27 M parameters, ~41 M MACs at 32x32)."""
    return CifarResNet(20, num_classes, in_channels)


@register_architecture("resnet32", paper="He et al., CVPR 2016")
def resnet32(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-32 (3 x 5 basic blocks, ~0.46 M parameters, ~69 M MACs at 32x32)."""
    return CifarResNet(32, num_classes, in_channels)


@register_architecture("resnet56", paper="He et al., CVPR 2016")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-56 (3 x 9 basic blocks, ~0.85 M parameters, ~125 M MACs at 32x32)."""
    return CifarResNet(56, num_classes, in_channels)


@register_architecture("resnet110", paper="He et al., CVPR 2016")
def resnet110(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-110 (3 x 18 basic blocks, ~1.7 M parameters, ~253 M MACs at 32x32)."""
    return CifarResNet(110, num_classes, in_channels)
