"""`archify`: rewrite the model into a target profile's operators, retrain it block by block, optionally quantize.

The model entering the stage is the teacher. Rewrites (``pipeline/archify/rewrites.py``) keep its weights where
shapes allow; the block-wise label-free schedule (``blockwise.py``) recovers its function; the optional
``quantize`` section ends the stage with LSQ quantization-aware training from the same teacher through the
quantize stage's own machinery, so the exported artifacts carry exactly the trained integers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from pipeline.archify.blockwise import BlockwiseOptions, distill_blockwise
from pipeline.archify.rewrites import REWRITES, archify_model
from pipeline.errors import ConfigError
from pipeline.metrics import label_metrics
from pipeline.quant.config import QATOptions, QuantizeConfig
from pipeline.stage import ModelState, Stage, StageConfig, StageContext, StageResult
from pipeline.stages.quantize import QuantizeStage, quantize_state
from pipeline.training import predict, reestimate_batch_norms
from targets.profile import OpProfile, load_profile

STUDENT_FILE = "student.safetensors"


class ArchifyQuantize(BaseModel):
    """Sub-8-bit quantization-aware training at the end of archify (LSQ or DoReFa, distilled from the teacher)."""

    model_config = ConfigDict(extra="forbid")
    weight_bits: int = Field(default=4, ge=2, le=8)
    act_bits: int = Field(default=8, ge=4, le=8)
    keep_first_last_8bit: bool = Field(default=True, description="first conv and classifier at 8 bits (Arch-Net: "
                                                                  "the FC stays 8-bit)")
    epochs: int = Field(default=20, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    batch_size: int = Field(default=64, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    augment: Literal["none", "shift", "mixup", "shift+mixup"] = "none"
    quantizer: Literal["lsq", "dorefa"] = Field(default="lsq", description="see quantize.qat.quantizer")
    dorefa_act_range: float = Field(default=10.0, gt=0)

    def quantize_config(self) -> QuantizeConfig:
        """The equivalent quantize-stage config (QAT, label-free KD from the teacher)."""
        return QuantizeConfig(type="quantize", mode="qat", weight_bits=self.weight_bits, act_bits=self.act_bits,
                              keep_first_last_8bit=self.keep_first_last_8bit,
                              qat=QATOptions(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                             temperature=self.temperature, augment=self.augment,
                                             quantizer=self.quantizer, dorefa_act_range=self.dorefa_act_range))


class ArchifyConfig(StageConfig):
    """Profile to convert to, which rewrites may run, the distillation schedule and optional quantization."""

    profile: str = Field(default="int8-npu", description="shipped profile name or a profile YAML path")
    rewrites: list[str] | None = Field(default=None, description=f"subset of {', '.join(REWRITES)} (default all)")
    reestimate_norms: bool = Field(default=True, description="set the statistics of BatchNorms that replaced "
                                                             "LayerNorms from the calibration data")
    distill: BlockwiseOptions | None = Field(default=BlockwiseOptions(), description="null: rewrite only")
    quantize: ArchifyQuantize | None = None


class ArchifyStage(Stage):
    """Convert to the profile's operator set and recover the teacher's function without labels."""

    name = "archify"
    config_cls = ArchifyConfig

    def _student(self, teacher: torch.nn.Module, profile: OpProfile, ctx: StageContext
                 ) -> tuple[torch.nn.Module, list]:
        cfg: ArchifyConfig = self.config  # type: ignore[assignment]
        unknown = [r for r in cfg.rewrites or [] if r not in REWRITES]
        if unknown:
            raise ConfigError(f"archify.rewrites: unknown {unknown}; valid rewrites: {', '.join(REWRITES)}")
        example = torch.from_numpy(ctx.splits.calibration.x[:2])
        return archify_model(teacher, profile, example, cfg.rewrites)

    def run(self, state: ModelState, ctx: StageContext) -> StageResult:
        """Rewrite, distil block by block, and (optionally) quantize."""
        from pipeline.check import lint, pytorch_ops

        cfg: ArchifyConfig = self.config  # type: ignore[assignment]
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
        new_state = ModelState(model=student.eval(), spec=state.spec, history=state.history,
                               extras={**state.extras, "teacher": teacher})
        notes = []
        if cfg.quantize is not None:
            result = quantize_state(cfg.quantize.quantize_config(), new_state, ctx, teacher=teacher)
            new_state, notes = result.state, result.notes
            new_state.extras["teacher"] = teacher
            metrics["quantize"] = result.metrics
            metrics["quantized_student_vs_teacher"] = label_metrics(predict(new_state.model, val.x), teacher_val,
                                                                    val.y)
        final = metrics.get("quantized_student_vs_teacher", metrics["float_student_vs_teacher"])
        ctx.log(f"  archify: agreement with teacher {final['agreement']:.4f} on {len(val)} validation samples")
        return StageResult(state=new_state, metrics=metrics, notes=notes)

    def save(self, state: ModelState, ctx: StageContext) -> list[Path]:
        """The float student's weights (and the PT2E graph when quantized)."""
        from safetensors.torch import save_file

        from pipeline._io import atomic_path

        cfg: ArchifyConfig = self.config  # type: ignore[assignment]
        student = state.extras["float_model"] if state.quantized else state.model
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

        cfg: ArchifyConfig = self.config  # type: ignore[assignment]
        teacher = state.model.eval()
        student, _ = self._student(teacher, load_profile(cfg.profile), ctx)
        student.load_state_dict(load_file(str(ctx.workdir / STUDENT_FILE)))
        new_state = ModelState(model=student.eval(), spec=state.spec, history=state.history,
                               extras={**state.extras, "teacher": teacher})
        if cfg.quantize is not None:
            new_state = QuantizeStage(cfg.quantize.quantize_config()).load(new_state, ctx)
            new_state.extras["teacher"] = teacher
        return new_state
