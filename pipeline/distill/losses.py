"""Distillation loss terms.

Each term is an ``nn.Module`` so train-only heads (regressors, projectors) are trained and checkpointed with
the objective, and dropped with it: they never reach an exported artifact.

Every term reads one ``Outputs`` record (logits, labels, tapped features) and returns a scalar.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the conventional alias


@dataclass
class Outputs:
    """What one forward pass of student and teacher produced."""

    student: torch.Tensor
    teacher: torch.Tensor
    labels: torch.Tensor | None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)


def standardize(logits: torch.Tensor) -> torch.Tensor:
    """Z-score each row of logits (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024)."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + 1e-7)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
            standardized: bool = False) -> torch.Tensor:
    """Hinton KD: T²·KL(softmax(t/T) ‖ softmax(s/T)) with batch-mean reduction (not 'mean', which divides by C).

    ``standardized`` z-scores both logit rows first, so the student matches the teacher's logit relations
    without having to match its logit scale (which a much smaller student may not reach).
    """
    if standardized:
        student, teacher = standardize(student), standardize(teacher)
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean",
                    log_target=True) * (t * t)


def augment_batch(x: torch.Tensor, mode: str, g: torch.Generator) -> torch.Tensor:
    """Function-matching augmentation: random shifts of up to one pixel and/or mixup within the batch.

    Mixup draws its ratio uniformly (Beta(1, 1), Beyer et al.); teacher and student then see this same batch.
    """
    if "shift" in mode:
        dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if "mixup" in mode:
        lam = float(torch.rand(1, generator=g))
        x = lam * x + (1 - lam) * x[torch.randperm(len(x), generator=g)]
    return x


class CrossEntropy(nn.Module):
    """CE with the ground-truth labels (a no-op on unlabeled batches)."""

    def forward(self, o: Outputs) -> torch.Tensor:
        """The term's value on one batch."""
        if o.labels is None:
            return o.student.new_zeros(())
        return F.cross_entropy(o.student, o.labels)


class KD(nn.Module):
    """T²·KL at temperature T (of z-scored logits when ``standardized``)."""

    def __init__(self, temperature: float, standardized: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.standardized = standardized

    def forward(self, o: Outputs) -> torch.Tensor:
        """The term's value on one batch."""
        return kd_loss(o.student, o.teacher, self.temperature, self.standardized)


class LogitMSE(nn.Module):
    """Mean squared logit difference: pulls the student's logits, hence its argmax, onto the teacher's."""

    def forward(self, o: Outputs) -> torch.Tensor:
        """The term's value on one batch."""
        return F.mse_loss(o.student, o.teacher)


def _pool_to(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, size) if x.ndim == 4 and tuple(x.shape[2:]) != size else x


class Hint(nn.Module):
    """FitNets: a learned regressor maps the student's guided layer onto the teacher's hint layer (MSE).

    Conv features use a 1x1 conv + BN regressor (spatial sizes matched by average pooling to the smaller);
    vector features a linear one.
    """

    def __init__(self, student_layer: str, teacher_layer: str, s_shape: torch.Size, t_shape: torch.Size) -> None:
        super().__init__()
        self.s, self.t = student_layer, teacher_layer
        if len(s_shape) == 4 and len(t_shape) == 4:
            self.size = (min(s_shape[2], t_shape[2]), min(s_shape[3], t_shape[3]))
            self.regressor: nn.Module = nn.Sequential(nn.Conv2d(s_shape[1], t_shape[1], 1, bias=False),
                                                      nn.BatchNorm2d(t_shape[1]))
        elif len(s_shape) == 2 and len(t_shape) == 2:
            self.size = ()
            self.regressor = nn.Linear(s_shape[1], t_shape[1])
        else:
            msg = (f"hint layers must both be conv (4-D) or both vectors (2-D); "
                   f"got {tuple(s_shape)} and {tuple(t_shape)}")
            raise ValueError(msg)

    def forward(self, o: Outputs) -> torch.Tensor:
        """The term's value on one batch."""
        s, t = o.student_features[self.s], o.teacher_features[self.t]
        if self.size:
            s, t = _pool_to(s, self.size), _pool_to(t, self.size)
        return F.mse_loss(self.regressor(s), t.detach())


class SimilarityPreserving(nn.Module):
    """Tung & Mori: ‖G_T − G_S‖²_F / b² with G = row-normalised batch Gram matrix (shapes may differ)."""

    def __init__(self, student_layer: str, teacher_layer: str) -> None:
        super().__init__()
        self.s, self.t = student_layer, teacher_layer

    @staticmethod
    def gram(f: torch.Tensor) -> torch.Tensor:
        """Row-L2-normalised b x b similarity matrix of the flattened features."""
        q = f.reshape(len(f), -1)
        return F.normalize(q @ q.t(), dim=1)

    def forward(self, o: Outputs) -> torch.Tensor:
        """The term's value on one batch."""
        gs, gt = self.gram(o.student_features[self.s]), self.gram(o.teacher_features[self.t].detach())
        return ((gs - gt) ** 2).sum() / (len(gs) ** 2)


class ProjectorRegression(nn.Module):
    """Chen et al. 2022: projected student features regressed onto the teacher's (unprojected) ones.

    Both are pooled (B, C) features. ``ensemble``: 3 independent Linear+ReLU projectors, averaged;
    ``linear``: one linear map; ``mlp``: Linear-ReLU-Linear. Distance: 1 − cosine (the paper) or MSE.
    """

    def __init__(self, student_layer: str, teacher_layer: str, s_dim: int, t_dim: int, kind: str,
                 distance: str) -> None:
        super().__init__()
        self.s, self.t, self.distance = student_layer, teacher_layer, distance
        if kind == "ensemble":
            heads = [nn.Sequential(nn.Linear(s_dim, t_dim), nn.ReLU()) for _ in range(3)]
        elif kind == "linear":
            heads = [nn.Linear(s_dim, t_dim)]
        else:
            heads = [nn.Sequential(nn.Linear(s_dim, t_dim), nn.ReLU(), nn.Linear(t_dim, t_dim))]
        self.projectors = nn.ModuleList(heads)

    @staticmethod
    def pooled(f: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled (B, C) features of a conv map; vectors pass through."""
        return f.mean(dim=(2, 3)) if f.ndim == 4 else f.reshape(len(f), -1)

    def forward(self, o: Outputs) -> torch.Tensor:
        """The term's value on one batch."""
        s = self.pooled(o.student_features[self.s])
        t = self.pooled(o.teacher_features[self.t]).detach()
        p = torch.stack([proj(s) for proj in self.projectors]).mean(0)
        if self.distance == "cosine":
            return (1 - F.cosine_similarity(p, t, dim=1)).mean()
        return F.mse_loss(p, t)
