"""A small three-conv CNN for tests and the embedded default dataset."""

from torch import nn

from harness import register_architecture


@register_architecture("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Three conv-BN-ReLU layers (32, 64, 128 filters), global average pooling, one linear classifier."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(in_channels, 32),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )
