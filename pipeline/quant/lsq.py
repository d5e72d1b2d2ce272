"""LSQ: learned step size quantization (Esser et al., ICLR 2020), as a PT2E fake-quant module.

v̂ = (clamp(round(v/s) + z, q_min, q_max) − z)·s with a straight-through round. The step ``s`` is a
parameter: its gradient is −v/s + round(v/s) inside the range and q_min−z / q_max−z outside, scaled by
g = 1/√(N·Q_P). Initialisation s = 2·mean|v|/√Q_P on the first batch. Because it subclasses
``FakeQuantizeBase`` and reports its (scale, zero_point) through ``calculate_qparams``, ``convert_pt2e``
turns the learned steps into exactly the Q/DQ parameters every exporter carries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``g``."""
    return (x - x * g).detach() + x * g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass; identity gradient."""
    return (x.round() - x).detach() + x


def lsq_quantize(v: torch.Tensor, s: torch.Tensor, zero: torch.Tensor, q_min: int, q_max: int, g: float
                 ) -> torch.Tensor:
    """Fake-quantize ``v`` with step ``s`` (broadcastable) and zero point ``zero``; LSQ gradients."""
    s = grad_scale(s, g)
    q = torch.clamp(v / s + zero, q_min, q_max)
    return (round_ste(q) - zero) * s


def mse_step(rows: torch.Tensor, zero: int, q_min: int, q_max: int, candidates: int = 50) -> torch.Tensor:
    """Per row of ``rows``, the step whose fake quantization of the row has the least squared error.

    Candidates clip at 2%..100% of the row's extent. Esser's 2·mean|v|/√Q_P suits Gaussian weights but not
    sparse post-ReLU activations: at 8 bits on an Arch-Net digits student it clipped every layer and QAT started
    from constant logits.
    """
    top = rows.abs().amax(dim=1, keepdim=True) / max(q_max - zero, 1)
    best_step, best_err = top.clone(), torch.full_like(top, float("inf"))
    for fraction in torch.linspace(0.02, 1.0, candidates):
        step = (top * fraction).clamp_min(1e-8)
        err = ((torch.clamp(torch.round(rows / step) + zero, q_min, q_max) - zero) * step - rows).pow(2).mean(
            dim=1, keepdim=True)
        better = err < best_err
        best_step, best_err = torch.where(better, step, best_step), torch.where(better, err, best_err)
    return best_step.flatten()


class LSQFakeQuantize(FakeQuantizeBase):
    """Learned-step fake quantizer (per tensor or per output channel), usable as a PT2E ``observer_or_fake_quant``.

    Weights: symmetric, zero point 0. Activations: the zero point is fixed at initialisation, to q_min when
    the first batch is non-negative (post-ReLU tensors use the whole range), else to 0.
    The first step comes from the first batch: ``init="lsq"`` Esser's 2·mean|v|/√Q_P; ``"range"`` max|v|/Q_P;
    ``"mse"`` the clip that minimises the quantization error (``mse_step``).
    """

    def __init__(self, dtype: torch.dtype = torch.int8, quant_min: int = -128, quant_max: int = 127,
                 qscheme: torch.qscheme = torch.per_tensor_affine, ch_axis: int = 0, init: str = "lsq",
                 **_: Any) -> None:
        super().__init__()
        self.init = init
        self.dtype, self.quant_min, self.quant_max, self.qscheme, self.ch_axis = (
            dtype, quant_min, quant_max, qscheme, ch_axis)
        self.is_per_channel = qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
        self.symmetric = qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
        self.is_dynamic = False
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @property
    def q_p(self) -> int:
        """Positive extent of the integer range measured from the zero point (LSQ's Q_P)."""
        return int(self.quant_max - int(self.zero_point.max()))

    def _shape(self, x: torch.Tensor) -> list[int]:
        shape = [1] * x.ndim
        if self.is_per_channel:
            shape[self.ch_axis] = -1
        return shape

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        if self.symmetric or x.min() < 0:
            zero = 0
        else:
            zero = self.quant_min  # non-negative activations: the whole range above the zero point
        q_p = max(self.quant_max - zero, 1)
        if self.is_per_channel:
            x = x.transpose(0, self.ch_axis).flatten(1)
        else:
            x = x.flatten()[:: max(1, x.numel() >> 20)].reshape(1, -1)  # ~1M values decide a per-tensor step
        if self.init == "range":
            step = x.abs().amax(dim=1) / q_p
        elif self.init == "mse":
            step = mse_step(x, zero, self.quant_min, self.quant_max)
        else:
            step = 2 * x.abs().mean(dim=1) / math.sqrt(q_p)
        self.scale.data = step.reshape(-1).clamp_min(1e-8).float()
        self.zero_point = torch.full_like(self.scale, zero, dtype=torch.int32)
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` (initialising the step on the first call)."""
        if not bool(self.initialized):
            self._initialise(x.detach())
        if not bool(self.fake_quant_enabled[0]):
            return x
        shape = self._shape(x)
        per_step = x.numel() / (self.scale.numel() if self.is_per_channel else max(x.shape[0], 1))
        g = 1.0 / math.sqrt(max(per_step, 1) * max(self.q_p, 1))
        s = self.scale.abs().clamp_min(1e-8).reshape(shape)
        z = self.zero_point.to(x.dtype).reshape(shape)
        return lsq_quantize(x, s, z, self.quant_min, self.quant_max, g)

    @torch.jit.export
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned step and the zero point, as PT2E's convert expects them."""
        scale = self.scale.detach().abs().clamp_min(1e-8)
        zero = self.zero_point.detach().to(torch.int64)
        if not self.is_per_channel:
            return scale.reshape(1), zero.reshape(1)
        return scale, zero

    def extra_repr(self) -> str:
        """Range and scheme, for printing the graph."""
        return (f"LSQ dtype={self.dtype} range=[{self.quant_min}, {self.quant_max}] qscheme={self.qscheme} "
                f"ch_axis={self.ch_axis}")
