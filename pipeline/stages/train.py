"""`train`: supervised training on the train split (used when a recipe gives no weights, e.g. the digits demo)."""

from __future__ import annotations

from pydantic import Field

from pipeline.errors import DataError
from pipeline.stage import ModelState, Stage, StageConfig, StageContext, StageResult
from pipeline.training import train_supervised


class TrainConfig(StageConfig):
    """Cross-entropy training with AdamW and a one-cycle schedule."""

    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    weight_decay: float = Field(default=1e-4, ge=0)


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
        logs = train_supervised(
            state.model, train.x, train.y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay, seed=ctx.seed, x_val=val.x, y_val=val.y,
            on_epoch=lambda log: ctx.log(
                f"  epoch {log.epoch}/{cfg.epochs} loss {log.loss:.4f}"
                + (f" val acc {log.val_accuracy:.4f}" if log.val_accuracy is not None else "")),
        )
        metrics = {"epochs": [vars(log) for log in logs], "final_loss": logs[-1].loss,
                   "val_accuracy": logs[-1].val_accuracy, "train_samples": len(train)}
        return StageResult(state=state, metrics=metrics)
