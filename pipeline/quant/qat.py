"""Quantization-aware training: LSQ fake quantizers in a PT2E graph, distilled from the float model.

It is a distillation run like any other (``distill_once`` on the shared Trainer), with the prepared PT2E
graph as the student: KD on logits, plus optional label CE and logit MSE, optional function-matching
augmentation with a live teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeship.distill.config import DistillConfig, LossSpec
from edgeship.distill.engine import DistillData, distill_once
from edgeship.quant.config import QATOptions
from edgeship.training.config import TrainerConfig


def qat_terms(opts: QATOptions, labelled: bool) -> list[LossSpec]:
    """KD at ``temperature``, plus ``label_weight``·CE (when labels exist) and ``logit_mse_weight``·MSE."""
    specs = [LossSpec(type="kd", temperature=opts.temperature)]
    if labelled and opts.label_weight > 0:
        specs.append(LossSpec(type="ce", weight=opts.label_weight))
    if opts.logit_mse_weight > 0:
        specs.append(LossSpec(type="logit_mse", weight=opts.logit_mse_weight))
    return specs


def train_qat(prepared: torch.fx.GraphModule, teacher: nn.Module, x: np.ndarray, y: np.ndarray | None,
              x_val: np.ndarray, opts: QATOptions, seed: int, workdir: Path, log: Callable[[str], None],
              resume: bool = False, fingerprint: str = "") -> list[dict[str, Any]]:
    """Train ``prepared`` (LSQ fake-quant graph) to match ``teacher`` with Adam and a cosine schedule.

    A checkpoint is written every epoch (``resume`` continues from it). Agreement with the teacher on
    ``x_val`` is logged per epoch (fake-quant simulation, before conversion); the last epoch is kept.
    """
    cfg = DistillConfig(type="distill", method="custom", losses=qat_terms(opts, y is not None), augment=opts.augment,
                        holdout=0.0, trainer=TrainerConfig(epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
                                                           optimizer="adam", weight_decay=0.0, schedule="cosine"))
    data = DistillData(x, y, x[:0], None if y is None else y[:0], x_val, None)
    history = distill_once(prepared, teacher, cfg.method_terms(), data, cfg, cfg.trainer, seed=seed, workdir=workdir,
                           log=log, resume=resume, fingerprint=fingerprint, label="qat epoch")
    return [{"epoch": r["epoch"], "loss": r["loss"], "agreement_with_float": r["agreement"]} for r in history]
