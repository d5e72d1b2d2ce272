"""The recipe: a YAML file validated into typed config classes (the public surface of a run).

Unknown keys are errors that list the valid ones; ``--set a.b=c`` overrides are applied to the raw
YAML before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, create_model, field_validator, model_validator

from edgeship.core.errors import ConfigError
from edgeship.core.validation import DeprecatedKey, Strict, format_errors, load_yaml, rename_deprecated
from edgeship.exporters import FORMATS
from edgeship.stages import StageEntry
from edgeship.targets import parse_runtime
from edgeship.targets.devices import DeviceConfig

# Top-level keys renamed since recipes were first written: old name -> new name (a note, never an error).
RENAMED = {"profile": "latency"}


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

    @field_validator("source")
    @classmethod
    def _moved(cls, v: str) -> str:
        # edgeship's own modules were importable as `pipeline.*` before they moved into the edgeship namespace.
        if v.startswith("pipeline."):
            new = "edgeship." + v.removeprefix("pipeline.")
            warnings.warn(f"model.source {v} is deprecated: edgeship's modules are now edgeship.* ({new})",
                          DeprecatedKey, stacklevel=2)
            return new
        return v


class SplitConfig(Strict):
    """One data split: a source and how many samples to take from it."""

    source: str = Field(default="digits", description="digits | imagefolder:<dir> | npz:<file> | synthetic")
    samples: int = Field(gt=0, description="number of samples in this split")


SEED = Field(default=0, ge=0, le=2**32 - 1, description="seeds torch and numpy (32 bits)")


class DataConfig(Strict):
    """Calibration and validation data (disjoint when they share a source)."""

    seed: int = SEED
    batch_size: int = Field(default=64, gt=0, description="batch size for reference inference")
    calibration: SplitConfig = SplitConfig(samples=256)
    validation: SplitConfig = SplitConfig(samples=360)
    control_samples: int = Field(default=0, ge=0, description="rows of the calibration source kept from training, "
                                                              "calibration and validation: quantize.accuracy_control "
                                                              "measures on them (0: train rows calibration did not "
                                                              "use, optimistic after a train stage)")
    allow_fewer_samples: bool = Field(default=False, description="run on fewer samples than a split asks for "
                                                                 "when the source has fewer (a note), instead of "
                                                                 "an error")


def _export_config() -> type[BaseModel]:
    """``export:``: the formats to write, run-wide settings, and one options section per registered format."""
    names = tuple(FORMATS)

    def in_registry_order(v: list[str]) -> list[str]:
        return [f for f in names if f in v]  # a stable report order, whatever order the recipe lists them in

    return create_model(
        "ExportConfig", __base__=Strict, __doc__="Which formats to write and how.",
        __validators__={"_order": field_validator("formats")(in_registry_order)},
        formats=(list[Literal[names]], Field(default_factory=lambda: list(names), min_length=1,
                                             description="at least one: a run that exports nothing proves nothing")),
        dynamic_batch=(bool, Field(default=False, description="dynamic batch in the formats that support it "
                                                              "(ONNX, OpenVINO; TFLite stays static)")),
        **{name: (fmt.options, fmt.options()) for name, fmt in FORMATS.items()},
    )


ExportConfig = _export_config()


def default_runtimes() -> dict[str, list[str]]:
    """Each registered format's default runtimes (``Format.runtimes``)."""
    return {name: list(fmt.runtimes) for name, fmt in FORMATS.items()}


AUTO = Literal["auto"]


class GateConfig(Strict):
    """Ship/no-ship thresholds applied to every artifact x runtime (defaults suit fp32 exports).

    Fractions are applied as counts: 0.995 on 360 samples allows 1 differing label (``floor(0.005 * 360)``).
    """

    top1_agreement_min: float = Field(default=0.999, ge=0, le=1,
                                      description="agreement with the reference (the PT2E model when quantized; "
                                                  "there a label within one output step of the top counts)")
    float_agreement_min: float | AUTO | None = Field(
        default=None, description="quantized runs: top-1 agreement with the float model, the one the user validated "
                                  "(auto: by the narrowest weight width, docs/stages/quantize.md; null: not gated)")
    cosine_min: float | AUTO | None = Field(
        default=None, description="mean per-sample cosine of the logits with the reference (auto: by the narrowest "
                                  "weight width; null: not gated)")
    rel_max_err_max: float | None = Field(default=1e-3, ge=0,
                                          description="max|artifact - ref| / max|ref| (null: not gated)")
    non_finite_max: int = Field(default=0, ge=0, description="NaN/Inf values allowed in the artifact output")
    reference_accuracy_min: float | AUTO | None = Field(
        default="auto", description="with labelled validation data: the accuracy the model you brought must reach "
                                    "(the float model of a quantized run), else the run fails before any runtime is "
                                    "judged (auto: chance + a quarter of the way to 1, 0.325 for 10 classes; null: "
                                    "not gated). A quantized reference that keeps less than 3/4 of the float "
                                    "model's accuracy above chance fails it too (a collapse)")
    degenerate_reference_max: float = Field(
        default=0.01, ge=0, le=1,
        description="fraction of samples whose reference top-1 is tied (e.g. a zero-initialised head) "
                    "above which top-1 agreement is meaningless and the run fails (at least 2 samples)")

    @field_validator("float_agreement_min", "cosine_min", "reference_accuracy_min")
    @classmethod
    def _fraction(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float | int) and not 0 <= v <= 1:
            msg = f"expected a fraction in [0, 1], 'auto' or null; got {v}"
            raise ValueError(msg)
        return v


QUANTIZED_GATES = GateConfig(top1_agreement_min=0.995, rel_max_err_max=None, float_agreement_min="auto",
                             cosine_min="auto")


class ValidateConfig(Strict):
    """Validation of each artifact on its runtime against the PyTorch reference."""

    enabled: bool = True
    gates: GateConfig = Field(default=GateConfig(), description="gates for fp32 exports")
    quantized_gates: GateConfig = Field(
        default=QUANTIZED_GATES,
        description="gates when the model is quantized (reference: the PT2E model, and the float model for "
                    "float_agreement_min); integer kernels round differently from PT2E's float simulation, so the "
                    "error is gated as a cosine and the relative error is reported, not gated")
    cross_check: bool = Field(
        default=True, description="also run each artifact on every other registered runtime that reads it (reported, "
                                  "not gated or timed): the cross-runtime matrix names a runtime or a conversion "
                                  "that disagrees with the other executions of the same model")
    divergence_min_sqnr_db: float = Field(
        default=20.0, description="layer-wise divergence (written when a gate fails, and by edgeship debug): the "
                                  "first layer whose SQNR against the reference falls below this is where a runtime "
                                  "starts to compute something else")
    runtimes: dict[str, list[str]] = Field(
        default_factory=default_runtimes,
        description="the runtimes that validate and time each format: name or name@variant (e.g. openvino@default, "
                    "reported but not gated); a runtime may read several formats (openvino reads onnx and tflite)")

    @field_validator("quantized_gates", mode="before")
    @classmethod
    def _over_quantized_defaults(cls, v: Any) -> Any:
        # A recipe naming one quantized gate changes that gate; the others keep the quantized defaults, not the fp32.
        return {**QUANTIZED_GATES.model_dump(), **v} if isinstance(v, dict) else v

    @field_validator("runtimes")
    @classmethod
    def _registered(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for fmt, specs in v.items():
            if fmt not in FORMATS:
                msg = f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}"
                raise ValueError(msg)
            for spec in specs:
                try:
                    runtime, _ = parse_runtime(spec)
                except ConfigError as e:
                    raise ValueError(str(e)) from None
                if fmt not in runtime.formats:
                    msg = f"{fmt}: runtime {runtime.name} reads {', '.join(runtime.formats)}, not {fmt}"
                    raise ValueError(msg)
        return {**default_runtimes(), **v}  # formats the recipe does not mention keep their defaults


class LatencyConfig(Strict):
    """Latency measurement: fixed threads, warm-up, timed runs (batch of the exported model)."""

    enabled: bool = True
    threads: int = Field(default=2, ge=1)
    warmup: int = Field(default=10, ge=0)
    runs: int = Field(default=50, ge=10)
    op_profile: bool = Field(default=True, description="also time every op with the runtime's own profiler "
                                                       "(hot spots by module and precision, in the report)")
    compare_fp32: bool = Field(default=True, description="quantized runs: also export and time the float model "
                                                          "on each runtime (speed-up vs fp32, same runtime)")
    compare_baseline: bool = Field(default=True, description="pruned runs: also export and time the model before "
                                                              "pruning on each runtime (speed-up vs unpruned)")


class CheckConfig(Strict):
    """The op-support check every run makes on its final PyTorch graph and each exported artifact."""

    enabled: bool = True
    profile: str = Field(default="cpu", description="archnet | int8-npu | cpu, or the path of a profile YAML file")
    fail_on_unsupported: bool = Field(default=False, description="exit 3 when any level violates the profile")


class Recipe(Strict):
    """A whole run: model, data, stages, exports, validation gates and profiling."""

    name: str = Field(default="run", description="run directory name under the output dir")
    seed: int = SEED
    output_dir: str = "runs"
    model: ModelConfig
    data: DataConfig = DataConfig()
    stages: list[StageEntry] = Field(default_factory=list, description="train | prune | distill | quantize | "
                                                                         "archify entries, run in order")
    export: ExportConfig = Field(default_factory=ExportConfig)  # type: ignore[valid-type]
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    latency: LatencyConfig = Field(default=LatencyConfig(), description="timing settings (formerly profile:)")
    check: CheckConfig = CheckConfig()
    device: DeviceConfig = Field(default_factory=DeviceConfig,
                                 description="where the runtimes run: local, or ssh://[user@]host[:port] (a string, "
                                             "or a mapping with url, python, ssh_config, workdir, timeouts)")
    # Deprecated keys met while loading (renamed since), for the report's notes.
    _deprecations: list[str] = PrivateAttr(default_factory=list)
    # Where `module:factory` sources are looked up before sys.path: the recipe's folder (a file), then the cwd.
    _search_path: list[str] = PrivateAttr(default_factory=lambda: [str(Path.cwd())])

    model_config = {**Strict.model_config, "populate_by_name": True}

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return rename_deprecated(data, RENAMED, "")

    @property
    def search_path(self) -> list[str]:
        """Folders searched first for a ``package.module:factory`` model source."""
        return self._search_path

    @property
    def deprecations(self) -> list[str]:
        """What the recipe still calls by an old name (each a note in the report)."""
        return self._deprecations

    @field_validator("device", mode="before")
    @classmethod
    def _device_url(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            msg = f"must be a plain directory name (letters, digits, . _ -); got {v!r}"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _uint8_pixels(self) -> Recipe:
        tflite = getattr(self.export, "tflite", None)
        if tflite is None or not tflite.uint8_io or "tflite" not in self.export.formats:
            return self
        pixels = any(getattr(s, "type", None) == "quantize" and getattr(s, "pixel_input", False) for s in self.stages)
        unnormalised = not any(self.model.input.mean) and all(v == 1 for v in self.model.input.std)
        if not (pixels or unnormalised):
            msg = ("export.tflite.uint8_io: raw uint8 pixels need a model that takes [0, 1] pixels; set "
                   "pixel_input: true on the quantize stage (model.input has mean/std normalisation)")
            raise ValueError(msg)
        return self

    def dump(self) -> dict[str, Any]:
        """The resolved recipe as plain data (written to ``recipe.resolved.yaml``)."""
        return self.model_dump(mode="json", by_alias=True)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to the raw recipe dict; list items by index."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value (e.g. latency.threads=4); got {assignment!r}")
    value = load_yaml(raw, f"--set {key}") if raw != "" else ""
    parts = key.split(".")
    # Old and new names address one section: the override goes where the file has it (validation renames it).
    twin = RENAMED.get(parts[0]) or next((old for old, new in RENAMED.items() if new == parts[0]), None)
    if twin is not None and twin in data and parts[0] not in data:
        parts[0] = twin
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
    """Validate raw recipe data once: every section and every stage entry against its typed config class."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level (model:, data:, stages:, ...)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecatedKey)
        try:
            recipe = Recipe.model_validate(data)
        except ValidationError as e:
            raise ConfigError(format_errors(e, source, Recipe)) from None
    recipe._deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecatedKey)]
    return recipe


def load_recipe_file(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe not found: {p}")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"), str(p))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file ({e})") from None
    data = data or {}
    base = p.resolve().parent
    if isinstance(data, dict):
        anchor_paths(data, base)  # before the overrides: a --set path is the user's, relative to where they are
    for o in overrides or []:
        if not isinstance(data, dict):
            break
        apply_override(data, o)
    recipe = parse_recipe(data, str(p))
    recipe._search_path = list(dict.fromkeys([str(base), str(Path.cwd())]))
    return recipe


def anchor_paths(data: dict[str, Any], base: Path) -> None:
    """Make the recipe's relative input paths relative to ``base`` (the recipe's folder), in place.

    A recipe then means the same from any working directory: ``model.source`` (``file.py:factory``, ``.pt2``),
    ``model.weights``, ``npz:``/``imagefolder:`` data sources and op-support profile files. ``output_dir`` stays
    relative to the working directory (where the user wants the runs), as do malformed values (validation names
    them).
    """

    def at(value: str) -> str:
        path = Path(value).expanduser()
        return value if path.is_absolute() else str(base / path)

    def profile_at(node: Any) -> None:
        if isinstance(node, dict) and isinstance(node.get("profile"), str) and Path(node["profile"]).suffix:
            node["profile"] = at(node["profile"])

    model = data.get("model")
    if isinstance(model, dict):
        source = model.get("source")
        if isinstance(source, str):
            head, sep, factory = source.rpartition(":")
            if source.endswith(".pt2"):
                model["source"] = at(source)
            elif sep and head.endswith(".py"):
                model["source"] = f"{at(head)}:{factory}"
        if isinstance(model.get("weights"), str) and model["weights"]:
            model["weights"] = at(model["weights"])
    splits = data.get("data")
    for name in ("calibration", "validation"):
        split = splits.get(name) if isinstance(splits, dict) else None
        if isinstance(split, dict) and isinstance(split.get("source"), str):
            kind, sep, arg = split["source"].partition(":")
            if sep and arg and kind in ("npz", "imagefolder"):
                split["source"] = f"{kind}:{at(arg)}"
    profile_at(data.get("check"))
    stages = data.get("stages")
    for stage in stages if isinstance(stages, list) else []:
        profile_at(stage)
