"""Per-layer bit widths of a quantize config: global, 8-bit first/last, then regex overrides (first match wins)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from edgeship.quant.config import QuantizeConfig

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerBits:
    """Resolved bit widths of one quantizable layer and why."""

    name: str
    kind: str
    weight_bits: int
    act_bits: int
    reason: str


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv/Linear modules in definition order (the order torchvision and most models run them in)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def resolve_bits(model: nn.Module, cfg: QuantizeConfig) -> tuple[list[LayerBits], list[str]]:
    """Bits per layer: global, then 8-bit first/last (if kept), then overrides (first match wins).

    Returns the table and warnings (an override that matches no layer names the layers it could match).
    """
    layers = quantizable_layers(model)
    first = next((n for n, m in layers if isinstance(m, nn.Conv1d | nn.Conv2d)), None)
    last = layers[-1][0] if layers else None
    table, used = [], [False] * len(cfg.overrides)
    for name, module in layers:
        wb, ab, reason = cfg.weight_bits, cfg.act_bits, "global"
        if cfg.keep_first_last_8bit and name in (first, last):
            wb, ab, reason = 8, max(cfg.act_bits, 8), "first conv" if name == first else "classifier"
        for i, o in enumerate(cfg.overrides):
            if re.search(o.match, name):
                used[i] = True
                wb = o.weight_bits if o.weight_bits is not None else wb
                ab = o.act_bits if o.act_bits is not None else ab
                reason = f"override {o.match!r}"
                break
        table.append(LayerBits(name, type(module).__name__, wb, ab, reason))
    names = ", ".join(n for n, _ in layers)
    warnings = [f"quantize.overrides[{i}].match {o.match!r} matches no layer; layer names are: {names}"
                for i, (o, u) in enumerate(zip(cfg.overrides, used, strict=True)) if not u]
    return table, warnings
