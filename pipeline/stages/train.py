"""`train`: supervised training on the train split (used when a recipe gives no weights, e.g. the digits demo)."""

from __future__ import annotations

import torch
from pydantic import Field

from pipeline.errors import DataError
from pipeline.stage import ModelState, Stage, StageConfig, StageContext, StageResult
from pipeline.training import predict, reestimate_batch_norms, train_supervised


class TrainConfig(StageConfig):
    """Cross-entropy training with AdamW and a one-cycle schedule."""

    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    precise_bn: bool = Field(default=False, description="recompute every BatchNorm's statistics over the train "
                                                        "split with the final weights (running averages with a "
                                                        "small momentum lag behind fast training)")


class TrainStage(Stage):
    """Train the model on the labelled train split (everything of the calibration source not held out)."""

    name = "train"
    config_cls = TrainConfig

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Train in place; report per-epoch loss and validation accuracy."""
        cfg: TrainConfig = self.config  # type: ignore[assignment]
        train, val = ctx.splits.train, ctx.splits.validation
        if train.y is None:
            raise DataError(f"stage train needs labels; the train split ({train.origin}) has none")
        history = train_supervised(
            state.model, train.x, train.y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay, seed=ctx.seed, x_val=val.x, y_val=val.y, log=ctx.log)
        metrics = {"epochs": history, "final_loss": history[-1]["loss"],
                   "val_accuracy": history[-1].get("accuracy"), "train_samples": len(train)}
        if cfg.precise_bn:
            # measured: torchvision mobilenet_v3_small (BN momentum 0.01) trained 10 epochs on digits at 64x64 scored
            # 1.0 in train mode and 0.09 in eval mode (constant logits); 1.0 after recomputing the statistics
            metrics["precise_bn"] = reestimate_batch_norms(state.model, [""], torch.from_numpy(train.x))
            if val.y is not None:
                metrics["val_accuracy"] = float((predict(state.model, val.x).argmax(1) == val.y).mean())
        return StageResult(state=state, metrics=metrics)
