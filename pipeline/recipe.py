"""The recipe: a YAML file validated into typed config classes (the public surface of a run).

Unknown keys are errors that list the valid ones; ``--set a.b=c`` overrides are applied to the raw
YAML before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

FORMATS = ("onnx", "tflite", "openvino")


class Strict(BaseModel):
    """Base for every config section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(Strict):
    """The model input: shape with batch (NCHW), normalisation of [0, 1] pixels, and the class count."""

    shape: list[int] = Field(description="input shape with batch, NCHW, e.g. [1, 3, 224, 224]")
    mean: list[float] = Field(default=[0.0], description="per-channel mean subtracted from [0, 1] pixels")
    std: list[float] = Field(default=[1.0], description="per-channel std dividing [0, 1] pixels")
    num_classes: int = Field(gt=1, description="length of the logits vector")

    @field_validator("shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) != 4 or any(d < 1 for d in v):
            msg = f"expected 4 positive dimensions [batch, channels, height, width] (NCHW); got {v}"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _per_channel(self) -> InputConfig:
        channels = self.shape[1]
        for name in ("mean", "std"):
            vals = getattr(self, name)
            if len(vals) == 1 and channels > 1:
                object.__setattr__(self, name, vals * channels)
            elif len(vals) != channels:
                msg = f"{name} has {len(vals)} values but the input has {channels} channels"
                raise ValueError(msg)
        if any(s <= 0 for s in self.std):
            msg = f"std values must be > 0; got {self.std}"
            raise ValueError(msg)
        return self


class ModelConfig(Strict):
    """Where the model comes from and which weights it loads."""

    source: str = Field(description="torchvision:<name> | timm:<name> | path/file.py:factory | "
                                    "package.module:factory | file.pt2")
    weights: str | None = Field(default=None, description=".pt/.pth state_dict or .safetensors; none = as built")
    input: InputConfig


class SplitConfig(Strict):
    """One data split: a source and how many samples to take from it."""

    source: str = Field(default="digits", description="digits | imagefolder:<dir> | npz:<file> | synthetic")
    samples: int = Field(gt=0, description="number of samples in this split")


class DataConfig(Strict):
    """Calibration and validation data (disjoint when they share a source)."""

    seed: int = 0
    batch_size: int = Field(default=64, gt=0, description="batch size for reference inference")
    calibration: SplitConfig = SplitConfig(samples=256)
    validation: SplitConfig = SplitConfig(samples=360)


class OnnxOptions(Strict):
    """ONNX exporter options."""

    opset: int = Field(default=18, ge=18, le=23, description="ONNX opset (>= 18; quantized models use >= 21)")
    int4_weights: bool = Field(
        default=True, description="quantized models: store <=4-bit weights as INT4 (smallest file; onnxruntime and "
                                  "OpenVINO CPU run those layers in float) or in int8 containers (run as int8)")
    uint8_activations: bool = Field(
        default=True, description="quantized models: express activations as uint8 (zero point + 128, identical "
                                  "values); onnxruntime's fast x86 kernels are u8 x s8, int8 activations mostly "
                                  "fall back to float")


class TFLiteOptions(Strict):
    """TFLite exporter options."""

    int8_io: bool = Field(default=False, description="quantized models: keep int8 input/output tensors")


class OpenVINOOptions(Strict):
    """OpenVINO exporter options."""

    source: Literal["auto", "exported_program", "onnx"] = "auto"
    compress_to_fp16: bool = False


class ExportConfig(Strict):
    """Which formats to write and how."""

    formats: list[Literal["onnx", "tflite", "openvino"]] = Field(default_factory=lambda: list(FORMATS))
    dynamic_batch: bool = Field(default=False, description="dynamic batch in ONNX and OpenVINO (TFLite stays static)")
    onnx: OnnxOptions = OnnxOptions()
    tflite: TFLiteOptions = TFLiteOptions()
    openvino: OpenVINOOptions = OpenVINOOptions()

    @field_validator("formats")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        # OpenVINO may start from the ONNX file, so formats run in a fixed order whatever the recipe says.
        return [f for f in FORMATS if f in v]


class GateConfig(Strict):
    """Ship/no-ship thresholds applied to every artifact x runtime (defaults suit fp32 exports)."""

    top1_agreement_min: float = Field(default=0.999, ge=0, le=1)
    rel_max_err_max: float | None = Field(default=1e-3, ge=0,
                                          description="max|artifact - ref| / max|ref| (null: not gated)")
    non_finite_max: int = Field(default=0, ge=0, description="NaN/Inf values allowed in the artifact output")
    degenerate_reference_max: float = Field(
        default=0.01, ge=0, le=1,
        description="fraction of samples whose reference top-1 is tied (e.g. a zero-initialised head) "
                    "above which top-1 agreement is meaningless and the run fails")


class ValidateConfig(Strict):
    """Validation of each artifact on its runtime against the PyTorch reference."""

    enabled: bool = True
    gates: GateConfig = Field(default=GateConfig(), description="gates for fp32 exports")
    quantized_gates: GateConfig = Field(
        default=GateConfig(top1_agreement_min=0.995, rel_max_err_max=None),
        description="gates when the model is quantized (reference: the PT2E model); integer kernels round "
                    "differently from PT2E's float simulation, so the relative error is reported, not gated")


class ProfileConfig(Strict):
    """Latency measurement: fixed threads, warm-up, timed runs (batch of the exported model)."""

    enabled: bool = True
    threads: int = Field(default=2, ge=1)
    warmup: int = Field(default=10, ge=0)
    runs: int = Field(default=50, ge=10)
    compare_fp32: bool = Field(default=True, description="quantized runs: also export and time the float model "
                                                          "on each runtime (speed-up vs fp32, same runtime)")
    compare_baseline: bool = Field(default=True, description="pruned runs: also export and time the model before "
                                                              "pruning on each runtime (speed-up vs unpruned)")


class CheckConfig(Strict):
    """The op-support check every run makes on its final PyTorch graph and each exported artifact."""

    enabled: bool = True
    profile: str = Field(default="cpu", description="archnet | int8-npu | cpu, or the path of a profile YAML file")
    fail_on_unsupported: bool = Field(default=False, description="exit 3 when any level violates the profile")


class StageSpec(Strict):
    """One stage entry: ``type`` plus that stage's own keys (validated by the stage's config class)."""

    model_config = ConfigDict(extra="allow")
    type: str


class Recipe(Strict):
    """A whole run: model, data, stages, exports, validation gates and profiling."""

    name: str = Field(default="run", description="run directory name under the output dir")
    seed: int = 0
    output_dir: str = "runs"
    model: ModelConfig
    data: DataConfig = DataConfig()
    stages: list[StageSpec] = Field(default_factory=list)
    export: ExportConfig = ExportConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    profile: ProfileConfig = ProfileConfig()
    check: CheckConfig = CheckConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            msg = f"must be a plain directory name (letters, digits, . _ -); got {v!r}"
            raise ValueError(msg)
        return v

    def dump(self) -> dict[str, Any]:
        """The resolved recipe as plain data (written to ``recipe.resolved.yaml``)."""
        return self.model_dump(mode="json", by_alias=True)


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    # Walk the config classes along a pydantic error location to list the valid keys at that point.
    model: type[BaseModel] | None = Recipe
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def format_validation_error(err: ValidationError, source: str) -> str:
    """Turn pydantic's error into lines that name the field, what was wrong, and what is valid."""
    lines = [f"{source}: invalid recipe"]
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            model = _model_at(loc)
            valid = _field_names(model) if model else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {where}: unknown key{hint}; valid keys here: {', '.join(valid)}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
            lines.append(f"  {where}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return "\n".join(lines)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the raw recipe dict; list items by index."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value (e.g. profile.threads=4); got {assignment!r}")
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} has {len(node)} entries; {part!r} is not one")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {key}: index {last!r} out of range")
        node[int(last)] = value
    else:
        node[last] = value


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate raw recipe data; stage entries are checked against their stage's config class too."""
    from pipeline.stages import validate_stage_spec

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level (model:, data:, stages:, ...)")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
    for i, spec in enumerate(recipe.stages):
        validate_stage_spec(spec.model_dump(), f"{source}: stages.{i}")
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file ({e})") from None
    data = data or {}
    for o in overrides or []:
        if not isinstance(data, dict):
            break
        apply_override(data, o)
    return parse_recipe(data, str(p))
