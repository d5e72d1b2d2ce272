"""Typed configs of training: the shared Trainer's and the `train` stage's (no torch import: recipes load fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgeship.stage import StageConfig


class TrainerConfig(BaseModel):
    """Optimizer, schedule, length and stopping rule of one training run."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(default=20, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(default=64, ge=1, description="per process (global batch = this x world size)")
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only (Nesterov)")
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["cosine", "constant", "onecycle", "cosine_restarts"] = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0, description="linear warm-up (cosine / constant schedules)")
    restart_epochs: int = Field(default=5, ge=1, description="period of cosine_restarts")
    grad_clip: float | None = Field(default=None, gt=0, description="clip the global gradient norm")
    early_stop_patience: int | None = Field(default=None, ge=1,
                                            description="stop after this many evaluations without improvement")
    early_stop_min_delta: float = Field(default=0.0, ge=0)
    restore_best: bool = Field(default=False, description="end with the weights of the best evaluation (a small "
                                                           "holdout is noisy: with a cosine decay the last epoch "
                                                           "is usually the better choice)")


class TrainConfig(StageConfig):
    """Cross-entropy training with AdamW and a one-cycle schedule."""

    type: Literal["train"] = "train"
    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    precise_bn: bool = Field(default=False, description="recompute every BatchNorm's statistics over the train "
                                                        "split with the final weights (running averages with a "
                                                        "small momentum lag behind fast training)")
