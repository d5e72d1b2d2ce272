"""The distillation objective: student + train-only heads as one module, the teacher held beside it.

The teacher is deliberately not a registered submodule: it is frozen, never checkpointed, never wrapped by DDP
and never exported. Feature terms read module outputs captured by forward hooks, which ``close()`` removes so
the student leaves training exactly as it came in, minus the weights it learned.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeship.core.errors import ConfigError
from edgeship.distill.config import LossSpec
from edgeship.distill.losses import (
    KD,
    CrossEntropy,
    Hint,
    LogitMSE,
    Outputs,
    ProjectorRegression,
    SimilarityPreserving,
    augment_batch,
)


def _module(model: nn.Module, name: str, where: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        shown = ", ".join(n for n in modules if n)[:600]
        raise ConfigError(f"distill {where}: no module named {name!r}; modules: {shown}")
    return modules[name]


def _probe(model: nn.Module, names: set[str], example: torch.Tensor, where: str) -> dict[str, torch.Size]:
    shapes: dict[str, torch.Size] = {}
    if not names:
        return shapes
    handles = [_module(model, n, where).register_forward_hook(
        lambda _m, _i, out, n=n: shapes.__setitem__(n, out.shape)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return shapes


def build_term(spec: LossSpec, s_shapes: dict[str, torch.Size], t_shapes: dict[str, torch.Size]) -> nn.Module:
    """Instantiate one loss term (feature terms size their heads from the probed shapes)."""
    if spec.type == "ce":
        return CrossEntropy()
    if spec.type == "kd":
        return KD(spec.temperature, spec.standardize)
    if spec.type == "logit_mse":
        return LogitMSE()
    s, t = str(spec.student), str(spec.teacher)
    if spec.type == "hint":
        return Hint(s, t, s_shapes[s], t_shapes[t])
    if spec.type == "similarity":
        return SimilarityPreserving(s, t)
    return ProjectorRegression(s, t, s_shapes[s][1], t_shapes[t][1], spec.kind, spec.distance)


class DistillObjective(nn.Module):
    """``forward(batch, generator) -> (loss, parts)`` for the Trainer.

    ``batch`` holds ``x``, ``y`` (or None) and ``index`` (rows of the training arrays). Without augmentation
    the teacher's logits come from ``teacher_logits`` (computed once); with it the teacher runs live on the
    student's exact augmented batch (function matching), and labels are dropped under mixup.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, specs: list[LossSpec], example: torch.Tensor,
                 augment: str = "none", teacher_logits: torch.Tensor | None = None) -> None:
        super().__init__()
        self.student = student
        self._teacher = [teacher.eval()]  # a list hides it from nn.Module registration (see module docstring)
        self.specs = specs
        self.augment = augment
        self.teacher_logits = teacher_logits
        s_names = {str(s.student) for s in specs if s.student}
        t_names = {str(s.teacher) for s in specs if s.teacher}
        s_shapes = _probe(student, s_names, example, "losses.student")
        t_shapes = _probe(teacher, t_names, example, "losses.teacher")
        self.terms = nn.ModuleList(build_term(s, s_shapes, t_shapes) for s in specs)
        self.weights = [s.weight for s in specs]
        types = [s.type for s in specs]
        self.names = [t if types.count(t) == 1 else f"{t}{i}" for i, t in enumerate(types)]
        self.active = list(range(len(specs)))
        # teacher features come from hooks, so a teacher whose features are read must run on every batch
        self.live_teacher = augment != "none" or teacher_logits is None or bool(t_names)
        self._s_feats: dict[str, torch.Tensor] = {}
        self._t_feats: dict[str, torch.Tensor] = {}
        self._handles = [_module(student, n, "losses.student").register_forward_hook(self._tap(self._s_feats, n))
                         for n in s_names]
        self._handles += [_module(teacher, n, "losses.teacher").register_forward_hook(self._tap(self._t_feats, n))
                          for n in t_names]

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher."""
        return self._teacher[0]

    @staticmethod
    def _tap(store: dict[str, torch.Tensor], name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            store[name] = out
        return hook

    def only(self, kinds: tuple[str, ...]) -> None:
        """Train with the terms of these types only (FitNets stage 1); ``()`` restores all terms."""
        self.active = [i for i, s in enumerate(self.specs) if not kinds or s.type in kinds]

    def forward(self, batch: dict[str, Any], g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the active terms, and each term's value."""
        x, y = batch["x"], batch["y"]
        if self.augment != "none":
            x = augment_batch(x, self.augment, g)
            if "mixup" in self.augment:
                y = None  # a mixed image has no single label
        student = self.student(x)
        if self.live_teacher:
            with torch.no_grad():
                teacher = self.teacher(x)
        else:
            teacher = self.teacher_logits[batch["index"]]
        o = Outputs(student, teacher, y, self._s_feats, self._t_feats)
        parts = {}
        loss = student.new_zeros(())
        for i in self.active:
            value = self.terms[i](o)
            parts[self.names[i]] = float(value.detach())
            loss = loss + self.weights[i] * value
        return loss, parts

    def close(self) -> None:
        """Remove the feature hooks (call before the student is exported or reused)."""
        for h in self._handles:
            h.remove()
        self._handles = []
