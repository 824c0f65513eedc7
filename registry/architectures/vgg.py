"""VGG-16 with batch norm for CIFAR (Simonyan & Zisserman, ICLR 2015; CIFAR variant of Li et al., ICLR 2017)."""

from torch import Tensor, nn

from harness import register_architecture

# 13 conv layers; "M" is a 2x2 max pool. The fifth pool is replaced by global average pooling (as in the
# CIFAR variant used by Li et al. 2017 and HRank), so 32x32 inputs reach the classifier as 512 x 1 x 1.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class CifarVGG(nn.Module):
    """Conv-BN-ReLU stack, global average pooling, a 512-512-classes MLP with batch norm."""

    def __init__(self, cfg: tuple[int | str, ...], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(cin, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Features, global pooling, classifier."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_architecture("vgg16_bn", paper="Simonyan & Zisserman, ICLR 2015")
def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR VGG-16 with batch norm (~15.0 M parameters, ~314 M MACs at 32x32); needs inputs of at least 16x16."""
    return CifarVGG(VGG16, num_classes, in_channels)
