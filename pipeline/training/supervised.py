"""Supervised training (the `train` stage, Network Slimming, pruning recovery) on the shared Trainer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeship.inference import predict


class CrossEntropyObjective(nn.Module):
    """``forward(x, y, generator) -> (loss, parts)`` for plain supervised training."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any], _g: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        """Cross-entropy of the model's logits against the batch labels."""
        return nn.functional.cross_entropy(self.model(batch["x"]), batch["y"]), {}


def train_supervised(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
                     weight_decay: float, seed: int, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                     log: Callable[[str], None] = print, label: str = "epoch",
                     after_backward: Callable[[nn.Module], None] | None = None, workdir: Path | None = None,
                     resume: bool = False, fingerprint: str = "") -> list[dict[str, Any]]:
    """Cross-entropy training with AdamW and a one-cycle schedule on the shared Trainer; seeded, deterministic.

    ``after_backward(module)`` may edit gradients before each optimizer step (e.g. Network Slimming's λ·sign(γ)).
    With ``workdir`` a checkpoint is written every epoch and ``resume`` continues from it when its ``fingerprint``
    matches. Returns the per-epoch history (loss, and validation accuracy when ``x_val``/``y_val`` are given).
    """
    from edgeship.training.config import TrainerConfig
    from edgeship.training.trainer import Trainer

    cfg = TrainerConfig(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, optimizer="adamw",
                        schedule="onecycle")

    def evaluate(_epoch: int) -> dict[str, Any]:
        if x_val is None or y_val is None:
            return {}
        return {"accuracy": float((predict(model, x_val).argmax(1) == y_val).mean())}

    trainer = Trainer(cfg, workdir=workdir, seed=seed, log=log, evaluate=evaluate, after_backward=after_backward,
                      resume=resume, fingerprint=fingerprint, label=label)
    history = trainer.fit(CrossEntropyObjective(model), x, y)
    model.eval()
    return history


def reestimate_batch_norms(model: nn.Module, modules: list[str], x: torch.Tensor, batch_size: int = 32) -> int:
    """Set the running statistics of the BatchNorms inside ``modules`` from ``x`` (no labels, no gradients).

    ``[""]`` names the whole model. A LayerNorm swapped for a BatchNorm starts with mean 0 / variance 1, i.e. no
    normalisation at all: 12 such blocks in a ViT let activations grow layer after layer, which int8 cannot
    represent. One forward pass over calibration data in train mode (cumulative averages) gives the statistics
    the data really has. Returns how many BatchNorms were re-estimated.
    """
    names = set(modules)
    norms = [bn for n, mod in model.named_modules() if n in names
             for bn in mod.modules() if isinstance(bn, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [bn.momentum for bn in norms]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative: every batch weighs the same
        bn.train()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i:i + batch_size])
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    return len(norms)
