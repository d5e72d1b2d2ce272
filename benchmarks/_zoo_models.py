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


def inception_v3(num_classes: int = 10) -> nn.Module:
    """torchvision inception_v3 without the auxiliary head (its train-mode tuple output is not a classifier's)."""
    from torchvision.models import inception_v3 as build

    return build(num_classes=num_classes, aux_logits=False, init_weights=True)


def googlenet(num_classes: int = 10) -> nn.Module:
    """torchvision googlenet without the two auxiliary heads."""
    from torchvision.models import googlenet as build

    return build(num_classes=num_classes, aux_logits=False, init_weights=True)


def vit_b_32_64(num_classes: int = 10) -> nn.Module:
    """torchvision vit_b_32 built for 64x64 inputs (4 patches + class token), with a random (not zero) head."""
    from torchvision.models import vit_b_32 as build

    model = build(num_classes=num_classes, image_size=64)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


def maxvit_t_64(num_classes: int = 10) -> nn.Module:
    """maxvit_t's layers (stem 64, blocks 64/128/256/512 x 2/2/5/2, head dim 32) at 64x64 inputs.

    torchvision's maxvit_t fixes partition_size=7, so it only accepts multiples of 224 (70 minutes of training per
    epoch on 2 cores); partition 2 divides every stage of a 64x64 input (16, 8, 4, 2) and keeps every op kind.
    """
    from torchvision.models import MaxVit

    return MaxVit(input_size=(64, 64), stem_channels=64, partition_size=2, block_channels=[64, 128, 256, 512],
                  block_layers=[2, 2, 5, 2], head_dim=32, stochastic_depth_prob=0.2, num_classes=num_classes)
