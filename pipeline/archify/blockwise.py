"""Arch-Net's progressive block-wise, label-free distillation of an archified student from its teacher.

Periods: the first block (the stem) alone, then one period per added block, then a final period on every
block plus the logits. Period k minimises Σ_{i≤k} 0.8^(k−i)·MSE(FA_i(a_i ⊙ S_i), T_i) (the newest block
weighs 1); the final period adds 1 − mean cos(z_S, z_T). No labels are read. Each period starts a fresh
optimiser (Adam, cosine warm restarts) from the previous weights; mixup hits a batch with small probability and
the teacher sees the same mixed images.

Train-only heads, per block: a teacher-attention gate a = sigmoid(FC(ReLU(FC(GAP(T))))) on feature maps and a
residual feature-adaptation head (1x1-3x3-1x1 convs on maps, d→d/16→d/16→d on tokens). They live in the
objective, never in the student, so nothing of them reaches an export.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeship.archify.config import BlockwiseOptions
from edgeship.core.errors import ConfigError
from edgeship.inference import predict
from edgeship.metrics import top1_agreement
from edgeship.training.config import TrainerConfig
from edgeship.training.trainer import Trainer

ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6)


def default_blocks(student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> list[str]:
    """Activation modules of the student called exactly once whose output matches the teacher's same module."""
    calls: dict[str, int] = {}
    handles = [mod.register_forward_hook(lambda *_a, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
               for n, mod in student.named_modules() if isinstance(mod, ACTIVATION_TYPES)]
    try:
        with torch.no_grad():
            student.eval()(example)
    finally:
        for h in handles:
            h.remove()
    teacher_names = dict(teacher.named_modules())
    return [n for n, c in calls.items() if c == 1 and n in teacher_names]


def resolve_blocks(patterns: list[str] | None, student: nn.Module, teacher: nn.Module,
                    example: torch.Tensor) -> list[str]:
    """Module names matched by ``patterns`` (present in both models), in the student's definition order."""
    if patterns is None:
        return default_blocks(student, teacher, example)
    t_names = set(dict(teacher.named_modules()))
    names = [n for n, _ in student.named_modules() if n and n in t_names and any(re.fullmatch(p, n) for p in patterns)]
    if not names:
        raise ConfigError(f"archify.distill.blocks {patterns} match no module present in both student and teacher; "
                          f"student modules: {', '.join(n for n, _ in student.named_modules() if n)[:500]}")
    return names


class FeatureHead(nn.Module):
    """Train-only: teacher-attention gate and residual feature adaptation for one block."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        c = shape[1] if len(shape) == 4 else shape[-1]
        hidden = max(c // 16, 4)
        self.maps = len(shape) == 4
        if self.maps:
            self.gate = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, c))
            mid = max(c // 4, 8)
            self.adapt: nn.Module = nn.Sequential(nn.Conv2d(c, mid, 1), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1),
                                                  nn.ReLU(), nn.Conv2d(mid, c, 1))
        else:
            self.adapt = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                       nn.Linear(hidden, c))
        nn.init.zeros_(list(self.adapt.parameters())[-2])  # start as the identity: FA(s) = s
        nn.init.zeros_(list(self.adapt.parameters())[-1])

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The adapted student feature, to compare with ``t``."""
        if self.maps:
            a = torch.sigmoid(self.gate(t.mean(dim=(2, 3)))).unsqueeze(-1).unsqueeze(-1)
            s = a * s
        return s + self.adapt(s)


class BlockwiseObjective(nn.Module):
    """Student + train-only heads; the teacher is held beside it (never registered, never saved)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, blocks: list[str], example: torch.Tensor,
                 opts: BlockwiseOptions) -> None:
        super().__init__()
        self.student, self._teacher, self.blocks, self.opts = student, [teacher.eval()], blocks, opts
        self.active, self.final = 1, False
        self._s: dict[str, torch.Tensor] = {}
        self._t: dict[str, torch.Tensor] = {}
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        self._handles = [s_mods[n].register_forward_hook(self._tap(self._s, n)) for n in blocks]
        self._handles += [t_mods[n].register_forward_hook(self._tap(self._t, n)) for n in blocks]
        with torch.no_grad():
            teacher(example)
        shapes = {n: self._t[n].shape for n in blocks}
        self.heads = nn.ModuleDict({str(i): FeatureHead(shapes[n]) for i, n in enumerate(blocks)}) \
            if opts.heads else None

    @staticmethod
    def _tap(store: dict[str, torch.Tensor], name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            store[name] = out
        return hook

    def period(self, active: int, final: bool) -> None:
        """Train on the first ``active`` blocks (and the logits when ``final``)."""
        self.active, self.final = active, final

    def forward(self, batch: dict[str, Any], g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Decayed block MSE (+ logit cosine in the final period) on one unlabeled batch."""
        x = batch["x"]
        if self.opts.mixup_prob and float(torch.rand(1, generator=g)) < self.opts.mixup_prob:
            lam = float(torch.rand(1, generator=g))
            x = lam * x + (1 - lam) * x[torch.randperm(len(x), generator=g)]
        with torch.no_grad():
            z_t = self._teacher[0](x)
        z_s = self.student(x)
        matched = z_s.new_zeros(())
        k = self.active
        for i, name in enumerate(self.blocks[:k]):
            s, t = self._s[name], self._t[name]
            if self.heads is not None:
                s = self.heads[str(i)](s, t)
            matched = matched + self.opts.decay ** (k - 1 - i) * F.mse_loss(s, t)
        loss = matched
        parts = {"block_mse": float(matched.detach())}
        if self.final:
            cos = 1 - F.cosine_similarity(z_s, z_t, dim=1).mean()
            loss = loss + cos
            parts["logit_cos"] = float(cos.detach())
        return loss, parts

    def close(self) -> None:
        """Remove the feature hooks from student and teacher."""
        for h in self._handles:
            h.remove()
        self._handles = []


def distill_blockwise(student: nn.Module, teacher: nn.Module, x: np.ndarray, x_val: np.ndarray,
                      opts: BlockwiseOptions, seed: int, workdir: Path, log: Callable[[str], None],
                      resume: bool = False, fingerprint: str = "") -> dict[str, Any]:
    """Run the whole schedule on unlabeled ``x``; return the blocks and per-period history."""
    example = torch.from_numpy(x[:2])
    blocks = resolve_blocks(opts.blocks, student, teacher, example)
    objective = BlockwiseObjective(student, teacher, blocks, example, opts)
    teacher_val = predict(teacher, x_val)
    periods: list[tuple[int, bool, int]] = []
    if blocks and opts.stem_epochs:
        periods.append((1, False, opts.stem_epochs))
    if opts.period_epochs:
        periods += [(k, False, opts.period_epochs) for k in range(2, len(blocks) + 1)]
    periods.append((len(blocks), True, opts.final_epochs))
    history = []
    log(f"  archify: {len(blocks)} blocks ({', '.join(blocks[:6])}{' ...' if len(blocks) > 6 else ''}), "
        f"{len(periods)} periods, label-free")
    try:
        for p, (active, final, epochs) in enumerate(periods):
            objective.period(active, final)
            cfg = TrainerConfig(epochs=epochs, batch_size=opts.batch_size, optimizer="adam", lr=opts.lr,
                                weight_decay=opts.weight_decay, schedule="cosine_restarts",
                                restart_epochs=min(opts.restart_epochs, epochs))
            trainer = Trainer(cfg, workdir=workdir / f"period{p:02d}", seed=seed + p, log=lambda _m: None,
                              resume=resume, fingerprint=f"{fingerprint}:{p}", label=f"period {p}")
            rows = trainer.fit(objective, x, None)
            agreement = top1_agreement(predict(student, x_val), teacher_val)
            what = "all blocks + logits" if final else f"blocks 1-{active}"
            log(f"  archify period {p} ({what}, {epochs} ep): loss {rows[-1]['loss']:.4f}, "
                f"agreement with teacher {agreement:.4f}")
            history.append({"period": p, "blocks": active, "final": final, "epochs": epochs,
                            "loss": rows[-1]["loss"], "agreement": agreement})
    finally:
        objective.close()
    student.eval()
    return {"blocks": blocks, "periods": history}
