"""Benchmark model factories: torchvision models whose random initialisation would make a useless reference."""

from __future__ import annotations

import torch
from torch import nn


def vit_b_16(num_classes: int = 10) -> nn.Module:
    """torchvision vit_b_16 with a random (not zero) classifier: a zero head gives constant logits, a degenerate
    reference that no agreement figure can be checked against."""
    from torchvision.models import vit_b_16 as build

    model = build(num_classes=num_classes)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    with torch.no_grad():
        model.heads.head.bias.zero_()
    return model


def vit_b_16_64(num_classes: int = 10) -> nn.Module:
    """torchvision vit_b_16 built for 64x64 inputs (16 patches + class token): trainable on digits on a CPU."""
    from torchvision.models import vit_b_16 as build

    return build(num_classes=num_classes, image_size=64)
