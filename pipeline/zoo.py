"""Small reference models that train on ``digits`` in seconds (used by examples and tests)."""

from __future__ import annotations

from torch import nn


def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    """Conv-BN-ReLU x3 + global average pool + linear: ~20k parameters, ~98% on digits at 16x16."""

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(in_channels, width, 1),
        *block(width, width * 2, 2),
        *block(width * 2, width * 4, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width * 4, num_classes),
    )


def digits_resnet(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    """A small ResNet with what accelerators lack: a 5x5 stem with SiLU, residual adds, 1x1 shortcuts, global pool.

    Built from torchvision's BasicBlock (~60k parameters); the archify examples convert it to the ``archnet`` set.
    """
    from torchvision.models.resnet import BasicBlock

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        return BasicBlock(cin, cout, stride=stride, downsample=down)

    return nn.Sequential(
        nn.Sequential(nn.Conv2d(in_channels, width, 5, padding=2, bias=False), nn.BatchNorm2d(width), nn.SiLU()),
        block(width, width, 1),
        block(width, width * 2, 2),
        block(width * 2, width * 4, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width * 4, num_classes),
    )


def digits_vit(num_classes: int = 10, in_channels: int = 1, image_size: int = 16) -> nn.Module:
    """The VisionTransformer of torchvision at digits size: 4x4 patches, 4 layers of width 64, 4 heads (~0.2M params).

    It has everything an int8 NPU lacks (LayerNorm, GELU, a patchify conv); ``examples/vit_archify.yaml``
    converts it to the ``int8-npu`` set.
    """
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=image_size, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64,
                              mlp_dim=128, num_classes=num_classes)
    model.conv_proj = nn.Conv2d(in_channels, 64, kernel_size=4, stride=4)
    # torchvision zero-initialises the head: a trained teacher does not care, a smoke test would get ties.
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model
