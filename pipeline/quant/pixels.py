"""Pixel inputs for quantized artifacts: the normalisation folded into the first convolution.

Images are 8-bit pixels. With a normalisation such as mean 0.5 / std 0.5, every normalised pixel (p - 127.5)/127.5
falls exactly halfway between two int8 levels, so no input scale and zero point can represent them: the input
quantizer moves every pixel by half a level (reported on a held-out 8-bit image set: 1.3% of a digits CNN's labels
flipped by that alone). ImageNet's means are off the grid too. ``pixel_input`` moves the normalisation into the
model instead: the artifact takes pixels in [0, 1] (or raw uint8 with ``export.tflite.uint8_io``), quantized at
scale 1/255 (every pixel value exact), and the first convolution carries the normalisation in its weights — as
deployed TFLite image models do.

Folding ``conv(W, (x - m)/s)`` into ``conv(W/s, x) - Σ W·m/s`` is exact only where no tap reads padding: the
padding of the normalised input is 0, which is pixel value m, not 0. The mean's share goes into the bias, and a
constant border channel (1 on the padding ring, 0 inside, weights ``Σ_c W[:, c]·m_c/s_c``) gives the taps that
read padding their share back, so border outputs are exact too. The channel is 0 or 1, on the 1/255 grid like
every pixel.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from edgeship.core.errors import ConfigError


class PixelInput(nn.Module):
    """``model`` behind its normalisation: takes [0, 1] pixels (the float reference of a pixel-input run)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, then run the model."""
        return self.model((x - self.mean) / self.std)


class FoldedStem(nn.Module):
    """A first convolution with the normalisation folded into its weights and bias.

    Inside the image the fold is exact with the mean's share in the bias (on the int32 grid once quantized). Taps
    that read padding must contribute 0 (normalised padding), not the ``-W·m/s`` the bias assumed: a constant
    border channel — 1 where the convolution reads padding, 0 inside — gives those taps back their share. It is
    0 or 1 like a pixel, so the 1/255 input quantizer keeps it exact, and interior outputs never see it.
    """

    def __init__(self, conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float], size: Sequence[int]) -> None:
        super().__init__()
        m = torch.tensor(list(mean), dtype=torch.float64).view(1, -1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float64).view(1, -1, 1, 1)
        w = conv.weight.detach().double()
        share = (w * m / s).sum(dim=1, keepdim=True)  # the mean's share, per output channel and tap
        bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        bias = bias - share.sum(dim=(1, 2, 3))
        pad_h, pad_w = _padding(conv)
        self.pad = (pad_w, pad_w, pad_h, pad_h) if (pad_h or pad_w) and bool((m != 0).any()) else None
        weight = w / s
        if self.pad is not None:
            weight = torch.cat([weight, share], dim=1)
            border = torch.ones(1, 1, size[0] + 2 * pad_h, size[1] + 2 * pad_w)
            border[..., pad_h:pad_h + size[0], pad_w:pad_w + size[1]] = 0
            self.register_buffer("border", border)
        self.conv = nn.Conv2d(weight.shape[1], conv.out_channels, conv.kernel_size, conv.stride,
                              0 if self.pad is not None else conv.padding, conv.dilation, 1, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(weight.float())
            self.conv.bias.copy_(bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stem convolution on pixels (zero-padded here, beside the border channel)."""
        if self.pad is not None:
            x = torch.cat([nn.functional.pad(x, self.pad), self.border.expand(x.shape[0], -1, -1, -1)], dim=1)
        return self.conv(x)


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    if isinstance(conv.padding, str):  # "valid"; "same" pads by the kernel and is refused by first_conv
        return 0, 0
    return int(conv.padding[0]), int(conv.padding[1])


def first_conv(model: nn.Module, example: torch.Tensor) -> str:
    """The module path of the convolution the input goes into, and nothing else does; an error if there is none."""
    from edgeship.core.graph import node_module

    program = torch.export.export(copy.deepcopy(model).eval(), (example,))
    user_input = program.graph_signature.user_inputs[0]
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_input)
    users = list(placeholder.users)
    name = node_module(users[0]) if len(users) == 1 and str(users[0].target) == "aten.conv2d.default" else None
    module = dict(model.named_modules()).get(name or "")
    if (not isinstance(module, nn.Conv2d) or module.groups != 1 or module.padding_mode != "zeros"
            or module.padding == "same"):
        raise ConfigError("quantize.pixel_input: the model input must go straight into one ordinary convolution "
                          "(groups 1, zero padding) to fold the normalisation into it; this model starts with "
                          + (str(users[0].target) if users else "nothing"))
    return name or ""


def fold_normalization(model: nn.Module, mean: Sequence[float], std: Sequence[float],
                       example: torch.Tensor) -> tuple[nn.Module, str]:
    """A copy of ``model`` that takes [0, 1] pixels (its first convolution a ``FoldedStem``), and the stem's path."""
    name = first_conv(model, example)
    folded = copy.deepcopy(model).eval()
    parent_name, _, attr = name.rpartition(".")
    parent = folded.get_submodule(parent_name) if parent_name else folded
    setattr(parent, attr, FoldedStem(getattr(parent, attr), mean, std, example.shape[2:]))
    return folded, f"{name}.conv" if name else "conv"
