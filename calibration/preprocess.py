"""Turn raw [0, 1] images into exactly what the model input expects (size, channels, mean/std)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def preprocess(x: np.ndarray, sample_shape: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Resize (bilinear, antialiased), match channels, and normalise ``x`` (N, C, H, W) in [0, 1].

    ``sample_shape`` is (C, H, W) of the model input; ``mean``/``std`` are per channel (an
    ``InputSpec``'s fields, passed plainly so this package stays independent of the exporters).
    Returns a contiguous float32 array of shape (N, C, H, W). Grayscale is repeated to three channels
    and RGB averaged to one when the model asks for it; other mismatches are errors.
    """
    import torch
    import torch.nn.functional as F

    from edgeship.core.errors import DataError

    channels, height, width = sample_shape
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.shape[1] != channels:
        if t.shape[1] == 1:
            t = t.expand(-1, channels, -1, -1)
        elif channels == 1 and t.shape[1] in (3, 4):
            t = t[:, :3].mean(dim=1, keepdim=True)
        elif channels == 3 and t.shape[1] == 4:
            t = t[:, :3]
        else:
            raise DataError(f"data has {t.shape[1]} channels; the model input (model.input.shape) expects {channels}")
    if tuple(t.shape[2:]) != (height, width):
        # Chunked so a 224x224 resize of a large set never holds two full copies at once.
        t = torch.cat([F.interpolate(c, size=(height, width), mode="bilinear", align_corners=False,
                                     antialias=True) for c in t.split(256)])
    mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    return np.ascontiguousarray(((t - mean) / std).numpy(), dtype=np.float32)


def to_pixels(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised inputs back to [0, 1] pixels on the 8-bit grid (what a camera pipeline hands the model)."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (np.clip(np.round((x * s + m) * 255), 0, 255) / 255).astype(np.float32)
