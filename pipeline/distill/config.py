"""The distill stage's typed config: a method preset, extra loss terms, teacher choice and the trainer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeship.stage import StageConfig
from edgeship.training.config import TrainerConfig

FEATURE_LOSSES = ("hint", "similarity", "projector")


class LossSpec(BaseModel):
    """One loss term. Feature terms (hint, similarity, projector) name a student and a teacher module."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["ce", "kd", "logit_mse", "hint", "similarity", "projector"]
    weight: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=4.0, gt=0, description="kd only")
    standardize: bool = Field(default=False, description="kd only: z-score both logit rows before the "
                                                         "temperature (logit standardization, Sun et al. 2024)")
    student: str | None = Field(default=None, description="student module name (feature terms)")
    teacher: str | None = Field(default=None, description="teacher module name (feature terms)")
    kind: Literal["ensemble", "linear", "mlp"] = Field(default="ensemble", description="projector only")
    distance: Literal["cosine", "mse"] = Field(default="cosine", description="projector only")

    @model_validator(mode="after")
    def _layers(self) -> LossSpec:
        if self.type in FEATURE_LOSSES and (not self.student or not self.teacher):
            msg = f"loss {self.type} needs 'student' and 'teacher' module names"
            raise ValueError(msg)
        return self


class TuneOptions(BaseModel):
    """Label preservation: pick (α, β, T) by held-out mismatch with short runs (random trials from the grid)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    alpha: list[float] = Field(default=[0.5, 1.0, 2.0], min_length=1)
    # measured on a digits student at 11% MACs (α=1, T=4, seed 0): β=0.1 left 8 mismatches, β=1 13, β=0 9;
    # a heavy logit MSE on a small student pulls it toward the teacher's logit scale, not its argmax
    beta: list[float] = Field(default=[0.0, 0.1, 0.5], min_length=1,
                              description="the logit-MSE weight: the term that targets argmax agreement")
    temperature: list[float] = Field(default=[1.0, 2.0, 4.0], min_length=1)
    trials: int = Field(default=8, ge=1)
    epochs: int | None = Field(default=None, ge=1, description="per trial; default trainer.epochs")
    refit: bool = Field(default=True, description="train the chosen (α, β, T) again on every training row, the "
                                                  "held-out ones included (they were only needed to choose); "
                                                  "false: keep the winning trial when it ran the full schedule")


class DistillConfig(StageConfig):
    """Train the stage's input model (the student) to reproduce a teacher's outputs.

    Methods: ``kd`` (T²·KL + α·CE), ``function_matching`` (live teacher on the same augmented batch, mixup,
    KL at T=1, no labels), ``label_preservation`` (CE + α·T²·KL + β·logit MSE, α/β/T auto-tuned on held-out
    mismatch), ``ce`` (labels only: the baseline) and ``custom`` (only ``losses``). ``losses`` adds terms.
    """

    type: Literal["distill"] = "distill"
    method: Literal["kd", "function_matching", "label_preservation", "ce", "custom"] = "kd"
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=1.0, ge=0, description="kd: CE weight; label_preservation: KL weight")
    beta: float = Field(default=0.1, ge=0, description="label_preservation: logit-MSE weight")
    standardize: bool = Field(default=False, description="z-score the logits inside the method's KL term "
                                                         "(logit standardization, Sun et al. 2024)")
    tune: TuneOptions = TuneOptions()
    losses: list[LossSpec] = Field(default_factory=list, description="extra terms, e.g. FitNets hints")
    hint_epochs: int = Field(default=0, ge=0, description="FitNets stage 1: epochs on the feature terms alone")
    augment: Literal["none", "shift", "mixup", "shift+mixup"] | None = Field(
        default=None, description="default: shift+mixup for function_matching, none otherwise")
    teacher: Literal["input", "stage_input", "previous_distill"] = Field(
        default="input", description="input: the model before compression; stage_input: this stage's input "
                                     "(born-again); previous_distill: the last distill stage's result (TA chains)")
    reinit: bool = Field(default=False, description="re-initialise the student (born-again networks)")
    generations: int = Field(default=1, ge=1, description="born-again generations (each teaches the next)")
    holdout: float | None = Field(default=None, ge=0, lt=0.5,
                                  description="fraction of the train split held out for tuning, early stopping "
                                              "and restore-best; default 0.15 when one of them is on, else 0")
    trainer: TrainerConfig = TrainerConfig(epochs=30, lr=2e-3, optimizer="adamw", early_stop_patience=None)

    @model_validator(mode="after")
    def _consistent(self) -> DistillConfig:
        if self.method == "custom" and not self.losses:
            msg = "method custom needs at least one entry in losses"
            raise ValueError(msg)
        if self.needs_holdout and self.holdout == 0:
            msg = ("tuning, early stopping and restore_best decide on held-out rows: holdout must be > 0 "
                   "(label_preservation tuning's objective is held-out mismatch)")
            raise ValueError(msg)
        if self.hint_epochs and not any(s.type in FEATURE_LOSSES for s in self.losses):
            msg = "hint_epochs needs a feature term (hint, similarity or projector) in losses"
            raise ValueError(msg)
        return self

    @property
    def needs_holdout(self) -> bool:
        """True when a decision (tuning, early stop, restore-best) is taken on held-out rows."""
        tuning = self.method == "label_preservation" and self.tune.enabled
        return tuning or self.trainer.early_stop_patience is not None or self.trainer.restore_best

    @property
    def refits(self) -> bool:
        """True when the tuned student trains again on every row, held-out ones included.

        The held-out rows chose (α, β, T); nothing else (early stopping, restore-best) still needs them.
        """
        return (self.method == "label_preservation" and self.tune.enabled and self.tune.refit
                and self.trainer.early_stop_patience is None and not self.trainer.restore_best)

    @property
    def holdout_fraction(self) -> float:
        """The held-out fraction actually used (rows held out are never trained on)."""
        if self.holdout is not None:
            return self.holdout
        return 0.15 if self.needs_holdout else 0.0

    @property
    def augment_mode(self) -> str:
        """The augmentation actually used."""
        if self.augment is not None:
            return self.augment
        return "shift+mixup" if self.method == "function_matching" else "none"

    def method_terms(self, alpha: float | None = None, beta: float | None = None,
                     temperature: float | None = None) -> list[LossSpec]:
        """The loss terms of ``method`` (tuned values override the configured α, β, T) plus ``losses``."""
        a = self.alpha if alpha is None else alpha
        b = self.beta if beta is None else beta
        t = self.temperature if temperature is None else temperature
        z = self.standardize
        base = {
            "ce": [LossSpec(type="ce")],
            "kd": [LossSpec(type="kd", temperature=t, standardize=z), LossSpec(type="ce", weight=a)],
            "function_matching": [LossSpec(type="kd", temperature=1.0, standardize=z)],
            "label_preservation": [LossSpec(type="ce"), LossSpec(type="kd", weight=a, temperature=t, standardize=z),
                                   LossSpec(type="logit_mse", weight=b)],
            "custom": [],
        }[self.method]
        return [s for s in base if s.weight > 0] + list(self.losses)
