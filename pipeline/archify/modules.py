"""Replacement modules the archify rewrites install: each runs only operators a restricted profile allows.

Exact ones (same outputs as the module they replace, before any training): ``PatchLinear``, ``HardGate`` (for
Hardsigmoid), ``centre_tap_3x3``, ``ConcatResidual`` and ``SplitConv`` (partial-sum mode), ``StaticWindowAttention``,
``StaticPatchMerging``. Approximate ones, recovered by distillation: ``TokenBatchNorm`` for LayerNorm,
activation swaps, the 3x3 stem, grouped ``SplitConv``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TokenBatchNorm(nn.Module):
    """BatchNorm over the last dimension of any tensor (tokens ``(B, L, C)`` or channels-last maps).

    Folded at export into a per-channel scale and shift; the reshape is free on every accelerator.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` over its last dimension with batch statistics (train) or running ones (eval)."""
        return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class HardGate(nn.Module):
    """relu6(x + 3) / 6: exactly Hardsigmoid, and a piecewise-linear stand-in for a sigmoid gate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gate value in [0, 1]."""
        return F.relu6(x + 3.0) * (1.0 / 6.0)


class HardSqueezeExcitation(nn.Module):
    """A squeeze-excitation block with a hard gate whose constants are folded away.

    ``x * relu6(fc2(s) + 3) / 6`` computed as ``(x * relu6(fc2'(s))) * (1/6)`` with the +3 folded into fc2's bias,
    so no converter sees the ``(z + 3) -> clip(0, 6) -> * 1/6`` chain that OpenVINO re-fuses into HSigmoid (an op
    NPUs lack); the trailing constant multiply is folded into the next convolution by the runtimes.
    """

    def __init__(self, se: nn.Module) -> None:
        super().__init__()
        self.avgpool, self.fc1, self.activation, self.fc2 = se.avgpool, se.fc1, se.activation, se.fc2
        with torch.no_grad():
            if self.fc2.bias is None:
                self.fc2.bias = nn.Parameter(torch.zeros(self.fc2.out_channels))
            self.fc2.bias.add_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gated input."""
        gate = F.relu6(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return (x * gate) * (1.0 / 6.0)


class PatchLinear(nn.Module):
    """A k x k / stride k convolution (patchify) as reshape + fully connected: the same outputs, no large kernel."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.k = conv.kernel_size[0]
        self.out_channels = conv.out_channels
        self.linear = nn.Linear(conv.in_channels * self.k * self.k, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out, H/k, W/k)."""
        b, c, h, w = x.shape
        k = self.k
        patches = x.reshape(b, c, h // k, k, w // k, k).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // k) * (w // k), -1)
        return self.linear(patches).permute(0, 2, 1).reshape(b, self.out_channels, h // k, w // k)


def centre_tap_3x3(conv: nn.Conv2d) -> nn.Conv2d:
    """A 1x1 convolution as a 3x3 one with the weight in the centre tap (zeros elsewhere): identical outputs."""
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=conv.stride, padding=1, groups=conv.groups,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :, 1, 1] = conv.weight[:, :, 0, 0]
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def conv3x3_stem(conv: nn.Conv2d) -> nn.Sequential:
    """A k x k stem (k odd, > 3) as (k-1)/2 stacked 3x3 conv-BN-ReLU with the same receptive field (strides 1..s)."""
    n = (conv.kernel_size[0] - 1) // 2
    layers: list[nn.Module] = []
    cin = conv.in_channels
    for i in range(n):
        last = i == n - 1
        layers.append(nn.Conv2d(cin, conv.out_channels, 3, stride=conv.stride if last else 1, padding=1, bias=False))
        if not last:  # the teacher's own BN and activation follow the last conv
            layers += [nn.BatchNorm2d(conv.out_channels), nn.ReLU()]
        cin = conv.out_channels
    return nn.Sequential(*layers)


def identity_bn(channels: int) -> nn.BatchNorm2d:
    """A BatchNorm2d that is exactly the identity in eval mode (running variance 1 - eps)."""
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_var.fill_(1.0 - bn.eps)
    return bn


class ConcatResidual(nn.Module):
    """A torchvision ResNet block whose ``out + identity`` is ``conv3x3(concat(out, identity))`` -> BN -> ReLU.

    The concat convolution starts as [I | I] in its centre tap, so the block computes exactly what it did.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        c = self._last_bn().num_features
        self.fuse = nn.Conv2d(2 * c, c, 3, padding=1, bias=False)
        with torch.no_grad():
            self.fuse.weight.zero_()
            eye = torch.eye(c)
            self.fuse.weight[:, :c, 1, 1] = eye
            self.fuse.weight[:, c:, 1, 1] = eye
        self.fuse_bn = identity_bn(c)
        self.relu = nn.ReLU()

    def _last_bn(self) -> nn.BatchNorm2d:
        return self.block.bn3 if hasattr(self.block, "bn3") else self.block.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's body, then concat with the shortcut instead of adding it."""
        b = self.block
        out = b.relu(b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out))
        if hasattr(b, "bn3"):
            out = b.bn3(b.conv3(b.relu(out)))
        identity = b.downsample(x) if b.downsample is not None else x
        return self.relu(self.fuse_bn(self.fuse(torch.cat([out, identity], dim=1))))


class SplitConv(nn.Module):
    """A convolution with too many input channels, split into groups of at most ``max_in`` inputs.

    ``exact`` (the profile allows add): each group's partial convolution is summed, the same outputs.
    Otherwise Arch-Net's split: each group maps its inputs to its share of the outputs and the shares are
    concatenated (a grouped convolution seeded with the teacher's diagonal blocks, recovered by distillation).
    """

    def __init__(self, conv: nn.Conv2d, max_in: int, exact: bool) -> None:
        super().__init__()
        self.exact = exact
        groups = -(-conv.in_channels // max_in)
        self.in_splits = [len(c) for c in torch.arange(conv.in_channels).chunk(groups)]
        self.out_splits = [conv.out_channels] * groups if exact else [
            len(c) for c in torch.arange(conv.out_channels).chunk(groups)]
        self.parts = nn.ModuleList()
        i0, o0 = 0, 0
        for g, (ci, co) in enumerate(zip(self.in_splits, self.out_splits, strict=True)):
            part = nn.Conv2d(ci, co, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                             dilation=conv.dilation, bias=conv.bias is not None and (not exact or g == 0))
            with torch.no_grad():
                part.weight.copy_(conv.weight[o0:o0 + co, i0:i0 + ci])
                if part.bias is not None:
                    part.bias.copy_(conv.bias[o0:o0 + co])
            self.parts.append(part)
            i0 += ci
            o0 += 0 if exact else co

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum (exact) or concatenate the per-group convolutions."""
        outs = [p(chunk) for p, chunk in zip(self.parts, x.split(self.in_splits, dim=1), strict=True)]
        if self.exact:
            total = outs[0]
            for o in outs[1:]:
                total = total + o
            return total
        return torch.cat(outs, dim=1)


class OneHotLinear(nn.Module):
    """Embedding lookup as one-hot x fully connected (Arch-Net's EmbeddingLSQ); padding rows read as zero."""

    def __init__(self, emb: nn.Embedding) -> None:
        super().__init__()
        self.num = emb.num_embeddings
        self.padding_idx = emb.padding_idx
        self.weight = nn.Parameter(emb.weight.detach().clone())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(...,) integer ids -> (..., dim) vectors."""
        onehot = F.one_hot(idx, self.num).to(self.weight.dtype)
        weight = self.weight
        if self.padding_idx is not None:
            weight = weight * (torch.arange(self.num, device=weight.device) != self.padding_idx).unsqueeze(1)
        return onehot @ weight


def roll2d(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """``torch.roll`` over dims (1, 2) of (B, H, W, C) as slices + concat (no Roll/Gather op)."""
    if sh:
        x = torch.cat([x[:, -sh:], x[:, :-sh]], dim=1)
    if sw:
        x = torch.cat([x[:, :, -sw:], x[:, :, :-sw]], dim=2)
    return x


class StaticWindowAttention(nn.Module):
    """torchvision's shifted-window attention for one fixed feature size, with its constants precomputed.

    The relative-position bias becomes a (heads, N, N) parameter (initialised from the table) and the shift mask a
    buffer, so the graph has no gather, scatter, compare or roll: only linear, matmul, softmax, add, slice, concat.
    """

    def __init__(self, attn: nn.Module, height: int, width: int) -> None:
        super().__init__()
        ws = list(attn.window_size)
        self.ws, self.heads = ws, attn.num_heads
        # Like torchvision, a map that is not a multiple of the window is zero-padded at the bottom/right (a
        # constant Pad) and cropped after; the padded tokens take part in attention exactly as they do there.
        self.pad = ((-height) % ws[0], (-width) % ws[1])
        self.h, self.w = height + self.pad[0], width + self.pad[1]
        self.shift = [0 if ws[0] >= self.h else attn.shift_size[0], 0 if ws[1] >= self.w else attn.shift_size[1]]
        self.qkv, self.proj = attn.qkv, attn.proj
        self.bias = nn.Parameter(attn.get_relative_position_bias().detach().clone())  # (1, heads, N, N)
        self.register_buffer("mask", self._mask(), persistent=True)

    def _mask(self) -> torch.Tensor:
        (wh, ww), (sh, sw), h, w = self.ws, self.shift, self.h, self.w
        n_win = (h // wh) * (w // ww)
        if not (sh or sw):
            return torch.zeros(n_win, wh * ww, wh * ww)
        region = torch.zeros(h, w)
        count = 0
        for hs in ((0, -wh), (-wh, -sh), (-sh, None)):
            for wsl in ((0, -ww), (-ww, -sw), (-sw, None)):
                region[hs[0]:hs[1], wsl[0]:wsl[1]] = count
                count += 1
        region = region.view(h // wh, wh, w // ww, ww).permute(0, 2, 1, 3).reshape(n_win, wh * ww)
        diff = region.unsqueeze(1) - region.unsqueeze(2)
        return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C), the same computation as ``shifted_window_attention`` in eval mode."""
        padded = any(self.pad)
        if padded:
            x = F.pad(x, (0, 0, 0, self.pad[1], 0, self.pad[0]))
        b, h, w, c = x.shape
        (wh, ww), (sh, sw) = self.ws, self.shift
        x = roll2d(x, -sh % h if sh else 0, -sw % w if sw else 0)
        n_win = (h // wh) * (w // ww)
        x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * n_win, wh * ww, c)
        qkv = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // self.heads) ** -0.5).matmul(k.transpose(-2, -1)) + self.bias
        if sh or sw:
            attn = attn.reshape(b, n_win, self.heads, wh * ww, wh * ww) + self.mask.unsqueeze(1).unsqueeze(0)
            attn = attn.reshape(-1, self.heads, wh * ww, wh * ww)
        x = attn.softmax(dim=-1).matmul(v).transpose(1, 2).reshape(b * n_win, wh * ww, c)
        x = self.proj(x)
        x = x.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = roll2d(x, sh, sw)
        return x[:, :h - self.pad[0], :w - self.pad[1]] if padded else x


class StaticPatchMerging(nn.Module):
    """torchvision's PatchMerging for even feature sizes, without its (zero) pad."""

    def __init__(self, merging: nn.Module) -> None:
        super().__init__()
        self.norm, self.reduction = merging.norm, merging.reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H/2, W/2, 2C)."""
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))
