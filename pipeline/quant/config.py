"""The quantize stage's typed config (no torch import: recipes load fast); bits.py resolves it per layer."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeship.stage import StageConfig


def _act_bits_valid(v: int | None) -> int | None:
    if v is not None and not (4 <= v <= 8 or v == 16):
        msg = f"activation bits must be 4-8 or 16; got {v}"
        raise ValueError(msg)
    return v


class LayerOverride(BaseModel):
    """Bits for every quantizable layer whose module name matches ``match`` (a regex, ``re.search``)."""

    model_config = ConfigDict(extra="forbid")
    match: str
    weight_bits: int | None = Field(default=None, ge=2, le=8)
    act_bits: int | None = Field(default=None, ge=4, le=16)

    _act = field_validator("act_bits")(_act_bits_valid)

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            msg = f"not a valid regular expression ({e})"
            raise ValueError(msg) from None
        return v


class CalibrationOptions(BaseModel):
    """Post-training calibration on the recipe's calibration split."""

    model_config = ConfigDict(extra="forbid")
    estimator: Literal["minmax", "percentile", "mse"] = "minmax"
    percentile: float = Field(default=99.99, gt=50, le=100)
    samples: int = Field(default=256, ge=1, description="calibration samples used (from the calibration split)")
    logits_range: Literal["full", "decisive"] = Field(
        default="full", description="the classifier output's range. full: every logit (min-max); decisive: from "
                                    "the lowest runner-up logit seen in calibration (or 0) up, so the 8-bit step "
                                    "is finer where labels are decided; logits below it clip (softmax "
                                    "probabilities change, labels do not)")


class QATOptions(BaseModel):
    """Quantization-aware training (LSQ step sizes, or DoReFa fixed ranges), distilled from the float model."""

    model_config = ConfigDict(extra="forbid")
    quantizer: Literal["lsq", "dorefa"] = Field(
        default="lsq", description="lsq: learned steps; dorefa: Arch-Net's fixed-range quantizers (tanh-normalised "
                                   "weights with 2^b levels and no zero, for layers of <= 6 bits; activations "
                                   "clipped to [0, dorefa_act_range] where non-negative, LSQ elsewhere)")
    dorefa_act_range: float = Field(default=10.0, gt=0, description="DoReFa activation clip (Arch-Net: x0.1, "
                                                                      "clamp [0, 1], i.e. 10)")
    epochs: int = Field(default=20, ge=1)
    lr: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=64, ge=1)
    temperature: float = Field(default=1.0, gt=0, description="KD temperature (loss is T^2 * KL)")
    label_weight: float = Field(default=0.0, ge=0, description="weight of cross-entropy on labels (0 = label-free)")
    logit_mse_weight: float = Field(default=0.0, ge=0, description="weight of ||z_s - z_t||^2 (label preservation)")
    augment: Literal["none", "shift", "mixup", "shift+mixup"] = Field(
        default="none", description="function matching: teacher and student see the same augmented batch "
                                    "(random 1-pixel shifts and/or mixup), the teacher runs live")


class AccuracyControl(BaseModel):
    """Accuracy-aware fallback (PTQ): the layers whose quantization costs most agreement go back to 8 bits or float."""

    model_config = ConfigDict(extra="forbid")
    max_drop: float = Field(default=0.005, ge=0, le=1,
                            description="allowed 1 - top-1 agreement with the float model, on rows of the calibration "
                                        "source that calibration did not use (never the validation split)")
    max_fallback_layers: int = Field(default=8, ge=0, description="at most this many layers fall back")
    rows: int = Field(default=512, ge=16, description="held-out rows measured (fewer if the source has fewer)")


class QuantizeConfig(StageConfig):
    """Weights 2-8 bits symmetric (per channel by default), activations 4-8 bits per tensor."""

    type: Literal["quantize"] = "quantize"
    mode: Literal["ptq", "qat"] = "ptq"
    weight_bits: int = Field(default=8, ge=2, le=8)
    act_bits: int = Field(default=8, ge=4, le=16, description="4-8, or 16 (symmetric int16; TFLite 16x8)")
    act_signed: bool = Field(default=True, description="int8 container (signed, affine) or uint8 (unsigned)")
    per_channel: bool = True
    weight_range: Literal["restricted", "full"] = Field(
        default="restricted", description="restricted: [-(2^(b-1)-1), 2^(b-1)-1]; full: [-2^(b-1), 2^(b-1)-1]")
    keep_first_last_8bit: bool = Field(default=True, description="first conv and classifier stay at 8 bits")
    overflow_fix: Literal["auto", "enable", "disable"] = Field(
        default="auto", description="store 8-bit weights in 7 bits (+-63) so u8s8 int8 kernels on x86 CPUs "
                                    "without VNNI cannot saturate; auto: enable when this CPU lacks VNNI")
    overrides: list[LayerOverride] = Field(default_factory=list)
    calibration: CalibrationOptions = CalibrationOptions()
    qat: QATOptions = QATOptions()
    pixel_input: bool = Field(
        default=False, description="artifacts take [0, 1] pixels quantized at 1/255 (every 8-bit pixel exact), the "
                                   "normalisation folded into the first convolution; export.tflite.uint8_io then "
                                   "takes raw uint8 pixels")
    accuracy_control: AccuracyControl | None = Field(
        default=None, description="PTQ: rank layers by sensitivity (quantize-one-layer-out), move the most sensitive "
                                  "to 8 bits (sub-8-bit layers) or float (8-bit layers) until agreement with the "
                                  "float model on held-out rows is within max_drop")

    _act = field_validator("act_bits")(_act_bits_valid)

    @model_validator(mode="after")
    def _control_is_ptq(self) -> QuantizeConfig:
        if self.accuracy_control is not None and self.mode != "ptq":
            msg = "accuracy_control applies to mode: ptq (QAT trains the quantized layers instead)"
            raise ValueError(msg)
        return self


def cpu_needs_overflow_fix() -> bool:
    """True on x86 CPUs without VNNI/AMX: their u8s8 int8 dot products saturate int16 with 8-bit weights."""
    import platform

    from edgeship.core.environment import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64", "i686"):
        return False
    return not cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}
