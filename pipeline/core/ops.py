"""The op vocabulary shared by the artifact op readers (one per format) and the op-support linter.

Each operator instance becomes an ``OpUse`` with the attributes profiles constrain (kernel, stride, input channels,
depthwise); the helpers recognise what every level spells differently (clips that are a quantizer's saturation,
means that are a global pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class OpUse:
    """One operator instance: where it is, its native name, the canonical ops it needs, and its attributes."""

    level: str  # pytorch | onnx | tflite | openvino
    op: str
    canonical: tuple[str, ...]
    where: str
    kernel: int | None = None
    stride: int | None = None
    in_channels: int | None = None
    depthwise: bool = False


def canonical(*names: str) -> tuple[str, ...]:
    """The canonical ops one native op needs (``canonical("matmul", "softmax")`` for fused attention)."""
    return names


def clip_kind(lo: float | None, hi: float | None) -> tuple[str, ...]:
    """relu6 for [0, 6], relu for [0, inf), else a generic clip."""
    if lo == 0 and hi == 6:
        return canonical("relu6")
    if lo == 0 and hi is None:
        return canonical("relu")
    return canonical("clip")


def saturates_quantizer(lo: float | None, hi: float | None, scale: float, zero: float,
                        container: tuple[int, int]) -> bool:
    """True when clamping to [lo, hi] is a quantizer's own saturation.

    Both ends are integer levels of the quantizer (``scale``, ``zero``) and the range is narrower than its
    ``container``. That is how a sub-8-bit activation is carried in an 8-bit tensor (a clamp to its levels,
    then the 8-bit quantize); a 4-bit NPU does it inside its quantizer, so the linter counts it as
    quantization, not a clip.
    """
    if scale <= 0:
        return False
    levels = [container[0] if lo is None else lo / scale + zero, container[1] if hi is None else hi / scale + zero]
    on_grid = all(abs(q - round(q)) < 1e-3 and container[0] <= round(q) <= container[1] for q in levels)
    return on_grid and round(levels[1]) - round(levels[0]) < container[1] - container[0]


def container_range(dtype: Any) -> tuple[int, int] | None:
    """The integer range of an 8-bit container (int8 or uint8); None for any other dtype."""
    if np.dtype(dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
        return None
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def is_spatial_mean(axes: Any, ndim: int | None, layout: str = "nchw") -> bool:
    """True when a mean reduces exactly the two spatial axes of a 4-D tensor (a global average pool)."""
    if axes is None or ndim != 4:
        return False
    norm = sorted(int(a) % 4 for a in np.atleast_1d(axes))
    return norm == ([2, 3] if layout == "nchw" else [1, 2])
