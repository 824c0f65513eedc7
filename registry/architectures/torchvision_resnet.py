"""torchvision's ImageNet ResNets (He et al., CVPR 2016) for ImageFolder datasets at 224x224."""

from torch import nn
from torchvision import models

from harness import register_architecture


def _with_stem(net: models.ResNet, in_channels: int) -> models.ResNet:
    """Replace the 3-channel stem for grey or multispectral inputs."""
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return net


@register_architecture("resnet18", paper="He et al., CVPR 2016 (torchvision)")
def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-18, randomly initialised (11.7 M parameters, 1.8 G MACs at 224x224 with 1000 classes)."""
    return _with_stem(models.resnet18(num_classes=num_classes), in_channels)


@register_architecture("resnet50", paper="He et al., CVPR 2016 (torchvision)")
def resnet50(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-50, randomly initialised (25.6 M parameters, 4.1 G MACs at 224x224 with 1000 classes)."""
    return _with_stem(models.resnet50(num_classes=num_classes), in_channels)
