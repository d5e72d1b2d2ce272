"""Distil one student from one teacher on array data.

Holdout carving, per-epoch label metrics, FitNets stage 1, and the label-preservation (α, β, T) tuner whose
objective is held-out mismatch.
"""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeship.distill.config import FEATURE_LOSSES, DistillConfig, LossSpec
from edgeship.distill.objective import DistillObjective
from edgeship.inference import predict
from edgeship.metrics import label_metrics
from edgeship.training.config import TrainerConfig
from edgeship.training.trainer import Trainer


@dataclass
class DistillData:
    """Training rows, the held-out rows used for decisions (early stop, tuning), and the reported split."""

    x: np.ndarray
    y: np.ndarray | None
    holdout_x: np.ndarray
    holdout_y: np.ndarray | None
    val_x: np.ndarray
    val_y: np.ndarray | None


def carve_holdout(x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int,
                  val_x: np.ndarray, val_y: np.ndarray | None) -> DistillData:
    """Hold ``fraction`` of the train split out of training (seeded); the validation split stays untouched."""
    n = int(round(len(x) * fraction))
    perm = np.random.default_rng(seed).permutation(len(x))
    keep, held = np.sort(perm[n:]), np.sort(perm[:n])
    return DistillData(x[keep], None if y is None else y[keep], x[held], None if y is None else y[held],
                       val_x, val_y)


def _epoch_metrics(student: nn.Module, teacher_holdout: np.ndarray, teacher_val: np.ndarray,
                   data: DistillData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(data.holdout_x):
        held = label_metrics(predict(student, data.holdout_x), teacher_holdout, data.holdout_y)
        out.update({"holdout_agreement": held["agreement"], "holdout_mismatches": held["mismatches"]})
    out.update(label_metrics(predict(student, data.val_x), teacher_val, data.val_y))
    return out


def distill_once(student: nn.Module, teacher: nn.Module, specs: list[LossSpec], data: DistillData,
                 cfg: DistillConfig, trainer_cfg: TrainerConfig, *, seed: int, workdir: Path | None,
                 log: Callable[[str], None], resume: bool = False, fingerprint: str = "",
                 label: str = "epoch") -> list[dict[str, Any]]:
    """Train ``student`` in place against ``teacher`` with the loss ``specs``; return per-epoch records."""
    teacher.eval()
    example = torch.from_numpy(data.x[:2])
    augment = cfg.augment_mode
    cached = None if augment != "none" else torch.from_numpy(predict(teacher, data.x))
    objective = DistillObjective(student, teacher, specs, example, augment=augment, teacher_logits=cached)
    teacher_holdout = predict(teacher, data.holdout_x) if len(data.holdout_x) else np.zeros((0, 1))
    teacher_val = predict(teacher, data.val_x)
    history: list[dict[str, Any]] = []
    try:
        if cfg.hint_epochs:
            objective.only(FEATURE_LOSSES)
            stage1 = trainer_cfg.model_copy(update={"epochs": cfg.hint_epochs, "early_stop_patience": None,
                                                    "restore_best": False})
            Trainer(stage1, workdir=None, seed=seed, log=log, label="hint epoch").fit(objective, data.x, data.y)
            objective.only(())
        trainer = Trainer(trainer_cfg, workdir=workdir, seed=seed, log=log,
                          evaluate=lambda _e: _epoch_metrics(student, teacher_holdout, teacher_val, data),
                          monitor="holdout_agreement" if len(data.holdout_x) else None,
                          resume=resume, fingerprint=fingerprint, label=label)
        history = trainer.fit(objective, data.x, data.y)
    finally:
        objective.close()
    student.eval()
    return history


@dataclass
class Tuning:
    """The trials of a label-preservation search and the winner.

    ``student`` is the winner's trained model when trials run the full schedule (it is then not retrained).
    """

    trials: list[dict[str, Any]]
    chosen: dict[str, Any]
    epochs_per_trial: int
    student: nn.Module | None
    history: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """What the report records."""
        return {"trials": self.trials, "chosen": self.chosen, "epochs_per_trial": self.epochs_per_trial}


def tune_label_preservation(student: nn.Module, teacher: nn.Module, data: DistillData, cfg: DistillConfig,
                            *, seed: int, log: Callable[[str], None]) -> Tuning:
    """Train one student per random (α, β, T) grid point; the winner has the fewest held-out mismatches.

    Ties go to fewer mismatches where the teacher is right, then to the smaller held-out logit MSE to the
    teacher (a smooth signal where counts are small). The student passed in is not modified.
    """
    grid = list(itertools.product(cfg.tune.alpha, cfg.tune.beta, cfg.tune.temperature))
    trials = random.Random(seed).sample(grid, min(cfg.tune.trials, len(grid)))
    epochs = cfg.tune.epochs or cfg.trainer.epochs
    trial_cfg = cfg.trainer.model_copy(update={"epochs": epochs})
    teacher_holdout = predict(teacher, data.holdout_x)
    results: list[dict[str, Any]] = []
    best: tuple[tuple[float, ...], int, nn.Module, list[dict[str, Any]]] | None = None
    for alpha, beta, temperature in trials:
        trial = copy.deepcopy(student)
        history = distill_once(trial, teacher, cfg.method_terms(alpha, beta, temperature), data, cfg, trial_cfg,
                               seed=seed, workdir=None, log=lambda _m: None)
        out = predict(trial, data.holdout_x)
        held = label_metrics(out, teacher_holdout, data.holdout_y)
        row = {"alpha": alpha, "beta": beta, "temperature": temperature, "holdout_mismatches": held["mismatches"],
               "holdout_mismatches_when_teacher_correct": held.get("mismatches_when_reference_correct", 0),
               "holdout_logit_mse": float(np.mean((out - teacher_holdout) ** 2))}
        results.append(row)
        key = (row["holdout_mismatches"], row["holdout_mismatches_when_teacher_correct"], row["holdout_logit_mse"])
        if best is None or key < best[0]:
            best = (key, len(results) - 1, trial, history)
        log(f"  tune α={alpha} β={beta} T={temperature}: {held['mismatches']} held-out mismatches")
    assert best is not None  # the grid and trials are non-empty (config validation)
    _, index, winner, history = best
    chosen = results[index]
    log(f"  tune: chose α={chosen['alpha']} β={chosen['beta']} T={chosen['temperature']} "
        f"({len(results)} trials of {epochs} epochs)")
    keep = epochs == cfg.trainer.epochs and not cfg.refits  # else the chosen setting trains again
    return Tuning(results, chosen, epochs, winner if keep else None, history if keep else [])
