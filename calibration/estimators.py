"""Range estimators for post-training quantization: min-max, percentile and MSE-optimal clipping.

Each is a torchao PT2E observer, so ``prepare_pt2e`` inserts it wherever the quantizer annotates a tensor
and ``convert_pt2e`` turns its range into the scale/zero-point of the Q/DQ pair. Per-tensor estimators
serve activations; the per-channel MSE estimator serves weights (it sees the whole weight tensor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchao.quantization.pt2e.observer import MinMaxObserver, PerChannelMinMaxObserver

# Activation samples kept per observer: enough for a stable 99.99th percentile, bounded in memory (4 MB).
RESERVOIR = 1 << 20
# Clipping candidates searched by the MSE estimator, as fractions of the observed range.
MSE_GRID = torch.linspace(0.2, 1.0, 81)


def _fake_quant(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int,
                symmetric: bool) -> torch.Tensor:
    """Quantize-dequantize each row of ``x`` (C, N) with its range [lo, hi] (C, 1), as the runtimes will."""
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.round(qmin - lo / scale.clamp_min(1e-12))
    scale = scale.clamp_min(1e-12)
    return torch.fake_quantize_per_channel_affine(x, scale.reshape(-1).float(), zero.reshape(-1).to(torch.int32),
                                                  0, qmin, qmax)


def mse_clip(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int,
             symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink [lo, hi] to the grid fraction that minimises quantization MSE on ``x``.

    ``x`` is (C, N) with ``lo``/``hi`` of shape (C, 1) for per-channel use, or (1, N) and (1, 1).
    """
    best_err = torch.full_like(lo, float("inf"))
    best_lo, best_hi = lo.clone(), hi.clone()
    for r in MSE_GRID:
        clo, chi = lo * r, hi * r
        err = (_fake_quant(x, clo, chi, qmin, qmax, symmetric) - x).pow(2).mean(dim=1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, clo, best_lo), torch.where(better, chi, best_hi)
    return best_lo, best_hi


class _ReservoirObserver(MinMaxObserver):
    """Per-tensor observer that also keeps a uniform sample of the values it sees."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(0)

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Record min/max and a bounded sample of the values."""
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().float().reshape(-1)
        keep = max(1, RESERVOIR // 64)  # per call; the reservoir is trimmed below
        if x.numel() > keep:
            x = x[torch.randint(0, x.numel(), (keep,), generator=self._gen)]
        self.samples.append(x)
        if sum(s.numel() for s in self.samples) > RESERVOIR:
            merged = torch.cat(self.samples)
            self.samples = [merged[torch.randperm(merged.numel(), generator=self._gen)[:RESERVOIR]]]
        return super().forward(x_orig)

    def _values(self) -> torch.Tensor:
        return torch.cat(self.samples) if self.samples else torch.zeros(1)

    def _is_symmetric(self) -> bool:
        return self.qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)


class PercentileObserver(_ReservoirObserver):
    """Clips the range at the given percentile of observed values (both tails)."""

    percentile: float = 99.99

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale/zero point from the percentile range."""
        v = self._values()
        q = self.percentile / 100.0
        lo = torch.quantile(v, 1 - q).clamp(max=0.0)
        hi = torch.quantile(v, q).clamp(min=0.0)
        return self._calculate_qparams(lo.reshape(()), hi.reshape(()))


class MSEObserver(_ReservoirObserver):
    """Picks the clipping range that minimises quantization MSE on the observed values."""

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale/zero point from the MSE-optimal range."""
        v = self._values().reshape(1, -1)
        lo, hi = self.min_val.reshape(1, 1).clamp(max=0), self.max_val.reshape(1, 1).clamp(min=0)
        lo, hi = mse_clip(v, lo, hi, self.quant_min, self.quant_max, self._is_symmetric())
        return self._calculate_qparams(lo.reshape(()), hi.reshape(()))


class PerChannelMSEObserver(PerChannelMinMaxObserver):
    """Per-channel weight observer with MSE-optimal clipping per output channel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last: torch.Tensor | None = None

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Keep the weight tensor for the per-channel search."""
        self.last = x_orig.detach().float()
        return super().forward(x_orig)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel scales from MSE-optimal symmetric clipping."""
        if self.last is None:
            return super().calculate_qparams()
        x = self.last.transpose(0, self.ch_axis).reshape(self.last.shape[self.ch_axis], -1)
        lo, hi = x.min(dim=1, keepdim=True).values.clamp(max=0), x.max(dim=1, keepdim=True).values.clamp(min=0)
        symmetric = self.qscheme == torch.per_channel_symmetric
        lo, hi = mse_clip(x, lo, hi, self.quant_min, self.quant_max, symmetric)
        return self._calculate_qparams(lo.reshape(-1), hi.reshape(-1))


class DecisiveLogitsObserver(MinMaxObserver):
    """Logits range from the lowest runner-up logit seen (or 0, which stays representable) to the highest logit.

    A logit below every sample's runner-up never decides a label, so clipping it changes no argmax, and the
    levels it would take make the step finer among the top logits, where one step decides near-ties
    (a digits-trained vit_b_16: runner-up logits >= 1.7 in a [-12.7, 13.1] range, so the step halves).
    A tenth of the span below the lowest runner-up is kept for samples calibration did not see.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("runner_up_min", torch.tensor(float("inf")))

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Record min/max and, for (batch, classes) logits, the lowest second-largest logit of a row."""
        if x_orig.numel() and x_orig.dim() == 2 and x_orig.shape[1] >= 2:
            runner_up = x_orig.detach().float().topk(2, dim=1).values[:, 1].min()
            self.runner_up_min = torch.minimum(self.runner_up_min, runner_up)
        return super().forward(x_orig)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale/zero point for [min(0, runner-up floor), max]; plain min-max when no (batch, classes) was seen."""
        if not torch.isfinite(self.runner_up_min):
            return super().calculate_qparams()
        hi = self.max_val.clamp(min=0)
        floor = self.runner_up_min - 0.1 * (hi - self.runner_up_min)
        lo = torch.maximum(self.min_val, floor).clamp(max=0)
        return self._calculate_qparams(lo.reshape(()), hi.reshape(()))


def percentile_observer(percentile: float) -> type[PercentileObserver]:
    """A ``PercentileObserver`` class bound to ``percentile`` (observers are built from classes by PT2E)."""
    return type(f"PercentileObserver_{percentile}", (PercentileObserver,), {"percentile": percentile})


# estimator name -> (activation observer factory, weight observer class)
ESTIMATORS: dict[str, tuple[Callable[[float], type], type]] = {
    "minmax": (lambda p: MinMaxObserver, PerChannelMinMaxObserver),
    "percentile": (percentile_observer, PerChannelMinMaxObserver),
    "mse": (lambda p: MSEObserver, PerChannelMSEObserver),
}

# calibration.logits_range -> the observer of the classifier's output
LOGITS_OBSERVERS: dict[str, type] = {"full": MinMaxObserver, "decisive": DecisiveLogitsObserver}
