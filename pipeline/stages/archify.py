"""`archify`: rewrite the model into a target profile's operators, retrain it block by block, optionally quantize.

The model entering the stage is the teacher. Rewrites (``pipeline/archify/rewrites.py``) keep its weights where
shapes allow; the block-wise label-free schedule (``blockwise.py``) recovers its function; the optional
``quantize`` section ends the stage with LSQ quantization-aware training from the same teacher through the
quantize stage's own machinery, so the exported artifacts carry exactly the trained integers.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import torch

from edgeship.archify.blockwise import distill_blockwise
from edgeship.archify.config import ArchifyConfig
from edgeship.archify.rewrites import archify_model
from edgeship.core.errors import ConfigError
from edgeship.inference import predict
from edgeship.metrics import label_metrics
from edgeship.stage import ModelState, Stage, StageContext, StageResult
from edgeship.stages.quantize import QuantizeStage, quantize_state
from edgeship.targets.profile import OpProfile, load_profile
from edgeship.training.supervised import reestimate_batch_norms

STUDENT_FILE = "student.safetensors"


class ArchifyStage(Stage[ArchifyConfig]):
    """Convert to the profile's operator set and recover the teacher's function without labels."""

    name = "archify"

    def _student(self, teacher: torch.nn.Module, profile: OpProfile, ctx: StageContext
                 ) -> tuple[torch.nn.Module, list]:
        cfg = self.config
        example = torch.from_numpy(ctx.splits.calibration.x[:2])
        return archify_model(teacher, profile, example, cfg.rewrites)

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Rewrite, distil block by block, and (optionally) quantize."""
        from edgeship.opcheck import lint, pytorch_ops

        cfg = self.config
        if state.quantized:
            raise ConfigError("archify runs on a float model: put it before the quantize stage (or use its own "
                              "archify.quantize section)")
        teacher = state.model.eval()
        profile = load_profile(cfg.profile)
        student, changes = self._student(teacher, profile, ctx)
        example = torch.from_numpy(ctx.splits.calibration.x[:1])
        left = lint(pytorch_ops(student, example), profile)
        for v in left:
            ctx.log(f"  archify: no rewrite for {v.count} x {v.op} ({v.reason}: {v.detail}), e.g. {v.where[0]}")
        metrics: dict = {"profile": profile.name, "changes": [vars(c) for c in changes],
                         "rewrites": dict(Counter(c.rewrite for c in changes)),
                         "violations_left": sum(v.count for v in left)}
        ctx.log(f"  archify: {len(changes)} modules rewritten for {profile.name} "
                f"({', '.join(f'{k} x{n}' for k, n in metrics['rewrites'].items()) or 'nothing to do'})")
        norms = [c.module for c in changes if c.rewrite == "layer_norm_to_batch_norm"]
        if cfg.reestimate_norms and norms:
            metrics["norms_reestimated"] = reestimate_batch_norms(student, norms,
                                                                  torch.from_numpy(ctx.splits.calibration.x))
        if cfg.distill is not None:
            metrics["distill"] = distill_blockwise(student, teacher, ctx.splits.train.x, ctx.splits.validation.x,
                                                   cfg.distill, ctx.seed, ctx.workdir, ctx.log, ctx.resume,
                                                   ctx.fingerprint)
        val = ctx.splits.validation
        teacher_val = predict(teacher, val.x)
        metrics["float_student_vs_teacher"] = label_metrics(predict(student, val.x), teacher_val, val.y)
        new_state = dataclasses.replace(state, model=student.eval())
        notes = []
        if cfg.quantize is not None:
            result = quantize_state(cfg.quantize.quantize_config(), new_state, ctx, teacher=teacher)
            new_state, notes = result.state, result.notes
            metrics["quantize"] = result.metrics
            metrics["quantized_student_vs_teacher"] = label_metrics(predict(new_state.model, val.x), teacher_val,
                                                                    val.y)
        final = metrics.get("quantized_student_vs_teacher", metrics["float_student_vs_teacher"])
        ctx.log(f"  archify: agreement with teacher {final['agreement']:.4f} on {len(val)} validation samples")
        return StageResult(state=new_state, metrics=metrics, notes=notes)

    def save(self, state: ModelState, ctx: StageContext) -> list[Path]:
        """The float student's weights (and the PT2E graph when quantized)."""
        from safetensors.torch import save_file

        from edgeship.core.io import atomic_path

        cfg = self.config
        student = state.float_model if state.float_model is not None else state.model
        path = ctx.workdir / STUDENT_FILE
        with atomic_path(path) as tmp:
            save_file({k: v.detach().contiguous().clone() for k, v in student.state_dict().items()}, str(tmp))
        files = [path]
        if cfg.quantize is not None:
            files += QuantizeStage(cfg.quantize.quantize_config()).save(state, ctx)
        return files

    def load(self, state: ModelState, ctx: StageContext) -> ModelState:
        """Rebuild the student by re-running the (deterministic) rewrites, then load what ``save`` wrote."""
        from safetensors.torch import load_file

        cfg = self.config
        teacher = state.model.eval()
        student, _ = self._student(teacher, load_profile(cfg.profile), ctx)
        student.load_state_dict(load_file(str(ctx.workdir / STUDENT_FILE)))
        new_state = dataclasses.replace(state, model=student.eval())
        if cfg.quantize is not None:
            new_state = QuantizeStage(cfg.quantize.quantize_config()).load(new_state, ctx)
        return new_state
