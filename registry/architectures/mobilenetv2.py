"""MobileNetV2 for CIFAR (Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018)."""

from torch import Tensor, nn

from harness import register_architecture

# (expansion t, output channels c, repeats n, first stride s) from the paper's Table 2, with the stem and the
# second stage at stride 1 instead of 2 so that 32x32 inputs end at 4x4 rather than 1x1 (the usual CIFAR variant).
CIFAR_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv, batch norm and (unless linear) ReLU6."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; identity shortcut when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [conv_bn(cin, hidden, 1)] if expansion != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, relu=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        """Bottleneck, plus the input where shapes allow."""
        return x + self.conv(x) if self.residual else self.conv(x)


class CifarMobileNetV2(nn.Module):
    """Stem, 17 inverted residual blocks, 1x1 conv to 1280 channels, global pooling, classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [conv_bn(in_channels, 32, 3)]
        cin = 32
        for t, c, n, s in CIFAR_SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        blocks.append(conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: Tensor) -> Tensor:
        """Features, global pooling, classifier."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_architecture("mobilenetv2", paper="Sandler et al., CVPR 2018")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR MobileNetV2, width 1.0 (~2.24 M parameters, ~94 M MACs at 32x32)."""
    return CifarMobileNetV2(num_classes, in_channels)
