"""Batched inference of a PyTorch model on arrays: the reference every artifact is compared with."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float32 logits of ``model`` in eval mode on ``x`` (no grad)."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(x[i:i + batch_size])).float().numpy())
    return np.concatenate(outs)
