"""A small supervised training loop (the `train` stage uses it; distillation reuses its pieces)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class EpochLog:
    """Loss and held-out accuracy after one epoch."""

    epoch: int
    loss: float
    val_accuracy: float | None


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float32 logits of ``model`` in eval mode on ``x`` (no grad)."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(x[i:i + batch_size])).float().numpy())
    return np.concatenate(outs)


def train_supervised(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
                     weight_decay: float, seed: int, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                     on_epoch: Callable[[EpochLog], None] | None = None,
                     after_backward: Callable[[nn.Module], None] | None = None) -> list[EpochLog]:
    """Train with AdamW + one-cycle schedule and cross-entropy; seeded, deterministic on CPU.

    ``after_backward(model)`` may edit gradients before each optimizer step (e.g. Network Slimming's λ·sign(γ)).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, -(-len(x) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    logs = []
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        total, seen = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward(model)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        acc = None
        if x_val is not None and y_val is not None:
            acc = float((predict(model, x_val).argmax(1) == y_val).mean())
        log = EpochLog(epoch, total / seen, acc)
        logs.append(log)
        if on_epoch:
            on_epoch(log)
    model.eval()
    return logs
