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
