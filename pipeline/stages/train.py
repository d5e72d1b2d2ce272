"""`train`: supervised training on the train split (used when a recipe gives no weights, e.g. the digits demo)."""

from __future__ import annotations

import torch

from edgeship.core.errors import DataError
from edgeship.inference import predict
from edgeship.stage import ModelState, Stage, StageContext, StageResult
from edgeship.training.config import TrainConfig
from edgeship.training.supervised import reestimate_batch_norms, train_supervised


class TrainStage(Stage[TrainConfig]):
    """Train the model on the labelled train split (everything of the calibration source not held out)."""

    name = "train"
    makes_input = True

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Train in place; report per-epoch loss and validation accuracy."""
        cfg = self.config
        train, val = ctx.splits.train, ctx.splits.validation
        if train.y is None:
            raise DataError(f"stage train needs labels; the train split ({train.origin}) has none")
        history = train_supervised(
            state.model, train.x, train.y, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay, seed=ctx.seed, x_val=val.x, y_val=val.y, log=ctx.log,
            workdir=ctx.workdir, resume=ctx.resume, fingerprint=ctx.fingerprint)  # Ctrl-C + --resume: next epoch
        metrics = {"epochs": history, "final_loss": history[-1]["loss"],
                   "val_accuracy": history[-1].get("accuracy"), "train_samples": len(train)}
        if cfg.precise_bn:
            # measured: torchvision mobilenet_v3_small (BN momentum 0.01) trained 10 epochs on digits at 64x64 scored
            # 1.0 in train mode and 0.09 in eval mode (constant logits); 1.0 after recomputing the statistics
            metrics["precise_bn"] = reestimate_batch_norms(state.model, [""], torch.from_numpy(train.x))
            if val.y is not None:
                metrics["val_accuracy"] = float((predict(state.model, val.x).argmax(1) == val.y).mean())
        return StageResult(state=state, metrics=metrics)
