"""Op-support profiles: which operators a target runs, with their constraints (``targets/profiles/*.yaml``).

A profile is data: users add their own YAML file and pass its path. Operators are named in edgeship's canonical
vocabulary (``CANONICAL_OPS``), which the op readers (``pipeline/opcheck.py``, ``exporters/*_ops.py``) map every
PyTorch, ONNX, TFLite and OpenVINO op to.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeship.core.errors import ConfigError
from edgeship.core.validation import format_errors, load_yaml

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

# Every canonical op the mapping tables produce; a profile may name only these.
CANONICAL_OPS = (
    "conv", "linear", "matmul", "batch_norm", "layer_norm", "group_norm", "relu", "relu6", "clip", "hardswish",
    "hardsigmoid", "gelu", "silu", "sigmoid", "tanh", "erf", "softmax", "add", "sub", "mul", "div", "pow", "sqrt",
    "rsqrt", "exp", "squared_difference", "reduce_mean", "reduce_other", "concat", "reshape", "transpose", "slice",
    "gather", "scatter", "pad", "max_pool", "avg_pool", "global_avg_pool", "embedding", "one_hot", "roll", "expand",
    "compare", "select", "cast", "resize", "quant",
)
# Activations the archify stage may substitute for unsupported ones.
ACTIVATIONS = ("relu", "relu6")


class OpRule(BaseModel):
    """Constraints on one allowed op (absent: any value passes)."""

    model_config = ConfigDict(extra="forbid")
    kernel_sizes: list[int] | None = Field(default=None, description="allowed square kernel sizes")
    max_kernel: int | None = Field(default=None, ge=1, description="largest allowed kernel side")
    strides: list[int] | None = Field(default=None, description="allowed strides")
    max_in_channels: int | None = Field(default=None, ge=1, description="most input channels of one conv")
    depthwise: bool = Field(default=True, description="depthwise (grouped) convolutions allowed")


class OpProfile(BaseModel):
    """A target's operator set: allowed canonical ops with constraints, and the bit widths it runs."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    allow_all: bool = Field(default=False, description="every op is supported (a CPU)")
    ops: dict[str, OpRule | None] = Field(default_factory=dict)
    weight_bits: list[int] | None = Field(default=None, description="weight bit widths it runs (none: any)")
    act_bits: list[int] | None = Field(default=None, description="activation bit widths it runs (none: any)")
    activation: str = Field(default="relu", description="what archify puts in place of unsupported activations")

    @field_validator("ops")
    @classmethod
    def _known(cls, v: dict[str, OpRule | None]) -> dict[str, OpRule | None]:
        for op in v:
            if op not in CANONICAL_OPS:
                close = difflib.get_close_matches(op, CANONICAL_OPS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                msg = f"unknown op {op!r}{hint}; canonical ops: {', '.join(CANONICAL_OPS)}"
                raise ValueError(msg)
        return {op: rule or OpRule() for op, rule in v.items()}

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        if v not in ACTIVATIONS:
            msg = f"must be one of {', '.join(ACTIVATIONS)}; got {v!r}"
            raise ValueError(msg)
        return v

    def allows(self, op: str) -> bool:
        """True when ``op`` (canonical) is supported at all."""
        return self.allow_all or op in self.ops

    def rule(self, op: str) -> OpRule:
        """The constraints on ``op`` (none for an allow-all profile)."""
        return OpRule() if self.allow_all else (self.ops.get(op) or OpRule())

    def kernel_ok(self, op: str, k: int) -> bool:
        """True when a ``k``x``k`` kernel passes ``op``'s rule."""
        r = self.rule(op)
        return (r.kernel_sizes is None or k in r.kernel_sizes) and (r.max_kernel is None or k <= r.max_kernel)

    def stride_ok(self, op: str, s: int) -> bool:
        """True when stride ``s`` passes ``op``'s rule."""
        strides = self.rule(op).strides
        return strides is None or s in strides


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in ``targets/profiles``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> OpProfile:
    """A shipped profile by name (``archnet``, ``int8-npu``, ``cpu``) or a user's YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown op-support profile {str(name_or_path)!r}; shipped profiles: "
                              f"{', '.join(builtin_profiles())} (or pass the path of a profile YAML file)")
    if not path.is_file():
        raise ConfigError(f"op-support profile file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a valid YAML profile ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (name:, ops:, weight_bits:, ...)")
    try:
        return OpProfile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, str(path), OpProfile, "op-support profile")) from None
