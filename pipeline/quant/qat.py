"""Quantization-aware training: LSQ fake quantizers in a PT2E graph, distilled from the float model."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.metrics import top1_agreement
from pipeline.quant.config import QATOptions
from pipeline.training import predict


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T²·KL(softmax(t/T) ‖ softmax(s/T)) with batch-mean reduction."""
    t = temperature
    return nn.functional.kl_div(nn.functional.log_softmax(student / t, dim=1),
                                nn.functional.log_softmax(teacher / t, dim=1), reduction="batchmean",
                                log_target=True) * (t * t)


def augment_batch(x: torch.Tensor, mode: str, g: torch.Generator) -> torch.Tensor:
    """Function-matching augmentation: random shifts of up to one pixel and/or mixup within the batch."""
    if "shift" in mode:
        dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if "mixup" in mode:
        lam = float(torch.rand(1, generator=g))
        x = lam * x + (1 - lam) * x[torch.randperm(len(x), generator=g)]
    return x


def train_qat(prepared: torch.fx.GraphModule, teacher: nn.Module, x: np.ndarray, y: np.ndarray | None,
              x_val: np.ndarray, opts: QATOptions, seed: int, workdir: Path,
              log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train ``prepared`` (LSQ fake-quant graph) to match ``teacher``; checkpoint every epoch.

    The loss is KD on logits, plus ``label_weight``·CE when labels exist and ``logit_mse_weight``·‖z_s − z_t‖².
    With ``augment`` the teacher runs live on the student's exact augmented batch (function matching).
    Agreement with the teacher on ``x_val`` is logged per epoch (fake-quant simulation, before conversion).
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher.eval()
    teacher_val = predict(teacher, x_val)
    params = [p for p in prepared.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=opts.lr)
    steps_per_epoch = max(1, math.ceil(len(x) / opts.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=opts.epochs * steps_per_epoch)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y) if y is not None and opts.label_weight > 0 else None
    teacher_logits = torch.from_numpy(predict(teacher, x))
    history = []
    for epoch in range(1, opts.epochs + 1):
        prepared.train()
        perm = torch.randperm(len(xt), generator=g)
        total = 0.0
        for i in range(0, len(perm), opts.batch_size):
            idx = perm[i:i + opts.batch_size]
            if opts.augment == "none":
                xb, target = xt[idx], teacher_logits[idx]
            else:
                xb = augment_batch(xt[idx], opts.augment, g)
                with torch.no_grad():
                    target = teacher(xb)
            out = prepared(xb)
            loss = kd_loss(out, target, opts.temperature)
            if opts.logit_mse_weight:
                loss = loss + opts.logit_mse_weight * nn.functional.mse_loss(out, target)
            if yt is not None and "mixup" not in opts.augment:
                loss = loss + opts.label_weight * nn.functional.cross_entropy(out, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        prepared.eval()
        agreement = top1_agreement(predict(prepared, x_val), teacher_val)
        torch.save(prepared.state_dict(), workdir / f"qat-epoch-{epoch:03d}.pt")
        history.append({"epoch": epoch, "loss": total / len(xt), "agreement_with_float": agreement})
        log(f"  qat epoch {epoch}/{opts.epochs} loss {total / len(xt):.4f} agreement with float {agreement:.4f}")
    prepared.eval()
    return history
