"""The archify stage's typed config (no torch import: recipes load fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeship.core.validation import rename_deprecated
from edgeship.quant.config import QATOptions, QuantizeConfig
from edgeship.stage import StageConfig

# The rewrites archify may run, in the order it runs them (rewrites.REWRITES holds the functions).
REWRITE_NAMES = ("static_windows", "layer_norm_to_batch_norm", "swap_activations", "embedding_to_one_hot",
                 "residual_to_concat", "convolutions", "max_pools", "global_pool_to_linear", "fixed_global_pools")


class BlockwiseOptions(BaseModel):
    """The Arch-Net schedule (lengths are configurable; the paper's are far longer)."""

    model_config = ConfigDict(extra="forbid")
    blocks: list[str] | None = Field(
        default=None, description="regexes of module names whose outputs are matched, in order (default: every "
                                  "activation module used once, i.e. each conv-BN-ReLU / MLP output)")
    stem_epochs: int = Field(default=10, ge=0, description="period 0: the first block alone")
    period_epochs: int = Field(default=5, ge=0, description="each period that adds the next block")
    final_epochs: int = Field(default=30, ge=1, description="every block plus the logits (cosine)")
    decay: float = Field(default=0.8, gt=0, le=1, description="weight decay factor per older block")
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-7, ge=0)
    batch_size: int = Field(default=64, ge=1)
    restart_epochs: int = Field(default=10, ge=1, description="cosine warm-restart period")
    mixup_prob: float = Field(default=0.1, ge=0, le=1)
    heads: bool = Field(default=True, description="train-only teacher-attention and feature-adaptation heads")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        return rename_deprecated(data, {"targets": "blocks"}, "archify.distill.")


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

    type: Literal["archify"] = "archify"
    profile: str = Field(default="int8-npu", description="shipped profile name or a profile YAML path")
    rewrites: list[str] | None = Field(default=None, description=f"subset of {', '.join(REWRITE_NAMES)} (default all)")
    reestimate_norms: bool = Field(default=True, description="set the statistics of BatchNorms that replaced "
                                                             "LayerNorms from the calibration data")
    distill: BlockwiseOptions | None = Field(default=BlockwiseOptions(), description="null: rewrite only")
    quantize: ArchifyQuantize | None = None

    @field_validator("rewrites")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        unknown = [r for r in v or [] if r not in REWRITE_NAMES]
        if unknown:
            msg = f"unknown {unknown}; valid rewrites: {', '.join(REWRITE_NAMES)}"
            raise ValueError(msg)
        return v
