"""Multi-head attention with separate q/k/v projections, so whole heads can be pruned.

torchvision's ``nn.MultiheadAttention`` packs q/k/v into one ``in_proj_weight`` and ties the head count to the
embedding width, so torch-pruning can only shrink every head's width. ``split_attention`` swaps each one for a
``HeadAttention`` with the same weights (outputs equal before pruning), whose head count follows its q/k/v
widths: after torch-pruning removes heads, the forward pass needs no attribute fix-up.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the conventional alias


class HeadAttention(nn.Module):
    """Batch-first self/cross attention: ``forward(query, key, value, ...) -> (output, None)`` like MHA."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        self.head_dim = embed_dim // num_heads
        self.q = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @property
    def num_heads(self) -> int:
        """Heads left (the q width over the per-head width)."""
        return self.q.out_features // self.head_dim

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                **_ignored: Any) -> tuple[torch.Tensor, None]:
        """Scaled dot-product attention per head; MHA's call signature, no attention weights returned."""
        b, n, _ = query.shape
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, -1, heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(query)), split(self.k(key)), split(self.v(value))
        attn = F.softmax((q @ k.transpose(-2, -1)) * self.head_dim ** -0.5, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, heads * self.head_dim)
        return self.out_proj(out), None


def _convert(mha: nn.MultiheadAttention) -> HeadAttention:
    if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None:  # noqa: SLF001
        msg = "only batch-first self-attention with packed q/k/v and no bias_k/bias_v can be split into heads"
        raise ValueError(msg)
    bias = mha.in_proj_bias is not None
    att = HeadAttention(mha.embed_dim, mha.num_heads, bias=bias)
    with torch.no_grad():
        for i, proj in enumerate((att.q, att.k, att.v)):
            rows = slice(i * mha.embed_dim, (i + 1) * mha.embed_dim)
            proj.weight.copy_(mha.in_proj_weight[rows])
            if bias:
                proj.bias.copy_(mha.in_proj_bias[rows])
        att.out_proj.weight.copy_(mha.out_proj.weight)
        if bias:
            att.out_proj.bias.copy_(mha.out_proj.bias)
    return att


def split_attention(model: nn.Module) -> dict[nn.Module, int]:
    """Replace every ``nn.MultiheadAttention`` in place; return {q/k/v linear: head count} for torch-pruning."""
    heads: dict[nn.Module, int] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                att = _convert(child)
                setattr(parent, name, att)
                heads.update({att.q: child.num_heads, att.k: child.num_heads, att.v: child.num_heads})
    return heads
