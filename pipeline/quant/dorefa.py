"""DoReFa-style fixed-range quantizers, as Arch-Net trains its CNN students (Zhou et al. 2016; Xu et al. 2021).

Weights: w_t = tanh(w/a) with a = max|w| (per tensor, or per output channel), s = 2·mean|w_t|,
u = clamp(w_t/s, −½, ½) + ½, k = 2·round(u·n) − n with n = 2^b − 1: 2^b symmetric levels, the odd integers
−n…n, no zero level, identity straight-through round. A b-bit DoReFa weight ships as integers in [−n, n] (b + 1
bits of container, 2^b values used). The paper's weight is k·s/(2n), whose scale a BatchNorm after the conv
absorbs; here BatchNorm is folded into the weights before QAT, so ŵ = k·c with c the per-channel least-squares
scale ⟨w, k⟩/⟨k, k⟩ (the kernel's own magnitude, as the folded BatchNorm needs). With the paper's k·s·a/(2n)
instead, every layer shrank its output (s/2 clips each weight above the mean magnitude) and the W2A4 digits
student's logits vanished: agreement 0.09; with c, 0.88 / 0.99 / 0.99 on seeds 0 / 1 / 2 (LSQ: 0.99).
PT2E's convert quantizes the *stored* weight, not the tanh-transformed one, so ``bake_dorefa_weights`` writes ŵ
into the graph's parameters first; the integers the exporters carry are then exactly the trained levels.

Activations: a fixed clip range [0, R] (Arch-Net scales by 0.1 after BN and clamps to [0, 1], so R = 10), no
learned parameters. Only non-negative tensors (after ReLU) fit that scheme; a signed tensor met at
initialisation (the normalised input, a residual sum, the logits) keeps a learned LSQ step instead.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

from edgeship.quant.lsq import LSQFakeQuantize, round_ste

MAX_DOREFA_WEIGHT_BITS = 6  # the odd grid of 2^b levels needs [-(2^b-1), 2^b-1]: within the +-63 of overflow-fix


def dorefa_levels(bits: int) -> int:
    """The integer half-range n = 2^b − 1 of a b-bit DoReFa weight (its levels are the odd integers −n…n)."""
    return 2**bits - 1


class DoReFaWeightFakeQuantize(FakeQuantizeBase):
    """DoReFa weight quantizer (tanh, mean-clipped, 2^b levels, least-squares scale), a PT2E fake quant.

    ``quant_min``/``quant_max`` must be ±(2^b − 1) (``dorefa_levels``); ``calculate_qparams`` reports the
    per-channel scale c of the last forward, so ŵ / c is an odd integer.
    """

    def __init__(self, dtype: torch.dtype = torch.int8, quant_min: int = -3, quant_max: int = 3,
                 qscheme: torch.qscheme = torch.per_tensor_symmetric, ch_axis: int = 0, **_: Any) -> None:
        super().__init__()
        if quant_min != -quant_max or (quant_max + 1) & quant_max:
            raise ValueError(f"DoReFa weights need a range of ±(2^b-1); got [{quant_min}, {quant_max}]")
        self.dtype, self.quant_min, self.quant_max, self.qscheme, self.ch_axis = (
            dtype, quant_min, quant_max, qscheme, ch_axis)
        self.is_per_channel = qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
        self.is_dynamic = False
        self.register_buffer("step", torch.ones(1))
        self.register_buffer("baked", torch.tensor(0, dtype=torch.uint8))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """ŵ from ``w`` (identity once baked: the parameter then already holds ŵ)."""
        if bool(self.baked) or not bool(self.fake_quant_enabled[0]):
            return w
        n = self.quant_max
        dims = [d for d in range(w.ndim) if not (self.is_per_channel and d == self.ch_axis)]
        alpha = w.detach().abs().amax(dim=dims, keepdim=True).clamp_min(1e-8)
        w_t = torch.tanh(w / alpha)
        s = (2 * w_t.abs().mean(dim=dims, keepdim=True)).clamp_min(1e-8)
        u = torch.clamp(w_t / s, -0.5, 0.5) + 0.5
        levels = 2 * round_ste(u * n) - n  # the odd integers −n…n
        paper_step = s * alpha / (2 * n)
        paper = levels * paper_step
        # Arch-Net's BatchNorm after the conv absorbs that step's scale (s/2 clips every weight above the mean
        # magnitude); folded, nothing does, and ten layers each shrinking their output starve the logits.
        # The per-channel least-squares scale of the levels to w plays the BatchNorm's part; applied as a
        # constant factor on the paper's weight, so the gradient is the paper's, rescaled.
        k = levels.detach()
        step = ((w.detach() * k).sum(dim=dims, keepdim=True) / (k * k).sum(dim=dims, keepdim=True)).clamp_min(1e-12)
        self.step = step.flatten().clone()
        return paper * (step / paper_step).detach()

    @torch.jit.export
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale c (per tensor or per channel) and zero point 0."""
        return self.step.clone(), torch.zeros_like(self.step, dtype=torch.int64)

    def extra_repr(self) -> str:
        """Levels and scheme, for printing the graph."""
        return f"DoReFa weights levels={self.quant_max + 1} qscheme={self.qscheme} ch_axis={self.ch_axis}"


class DoReFaActFakeQuantize(LSQFakeQuantize):
    """Fixed-range activation quantizer on [0, ``fixed_range``] for non-negative tensors; LSQ for signed ones.

    The choice is made on the first batch, like LSQ's zero point, and kept in the ``fixed`` buffer.
    """

    def __init__(self, *args: Any, fixed_range: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fixed_range = fixed_range
        self.register_buffer("fixed", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        if self.symmetric or self.is_per_channel or x.min() < 0:
            super()._initialise(x)
            return
        self.scale.data = torch.tensor([self.fixed_range / (self.quant_max - self.quant_min)])
        self.zero_point = torch.full_like(self.scale, self.quant_min, dtype=torch.int32)
        self.fixed.fill_(1)
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fixed-range fake quantization (no gradient to the step), or LSQ for a signed tensor."""
        if not bool(self.initialized):
            self._initialise(x.detach())
        if bool(self.fixed):
            self.scale.requires_grad_(False)
        return super().forward(x)


def bake_dorefa_weights(model: torch.fx.GraphModule) -> int:
    """Write ŵ into the parameters behind every DoReFa weight quantizer (before ``convert_pt2e``); return how many.

    Convert quantizes the stored tensor with the quantizer's step: after baking that is exactly the trained
    odd-integer grid, where the raw weight would be rounded without its tanh normalisation.
    """
    baked = 0
    for node in model.graph.nodes:
        if node.op != "call_module":
            continue
        fq = model.get_submodule(node.target)
        source = node.args[0] if node.args else None
        if not isinstance(fq, DoReFaWeightFakeQuantize) or bool(fq.baked) or getattr(source, "op", "") != "get_attr":
            continue
        weight = operator.attrgetter(source.target)(model)
        with torch.no_grad():
            weight.copy_(fq(weight))
        fq.baked.fill_(1)
        baked += 1
    return baked
