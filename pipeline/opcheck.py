"""``edgeship check``: lint a model and its artifacts against an op-support profile, in one pass.

The PyTorch level reads the ``torch.export`` graph and names each node by the module it was traced from; the
artifact levels read the files themselves (each format's op reader, ``exporters/*_ops.py``). Every violation
carries a reason code: ``unsupported_op`` · ``unmapped_op`` (no canonical name: edgeship cannot vouch for it) ·
``kernel_size`` · ``stride`` · ``in_channels`` · ``depthwise`` · ``weight_bits`` · ``act_bits``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeship.core.ops import OpUse, clip_kind, is_spatial_mean, saturates_quantizer
from edgeship.exporters import FORMATS, artifact_ops
from edgeship.targets.profile import OpProfile

LEVELS = ("pytorch", *FORMATS)
POOLS = ("max_pool", "avg_pool")


@dataclass
class Violation:
    """Every instance of one native op at one level that breaks the profile for the same reason."""

    level: str
    op: str
    canonical: str
    reason: str
    detail: str
    count: int = 0
    where: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """The linter's result: ops seen and violations per level."""

    profile: str
    ops_seen: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no level violates the profile."""
        return not self.violations

    def count(self, level: str | None = None) -> int:
        """Violating op instances (at ``level``, or everywhere)."""
        return sum(v.count for v in self.violations if level is None or v.level == level)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"profile": self.profile, "passed": self.passed, "ops_seen": self.ops_seen,
                "violations_by_level": {lv: self.count(lv) for lv in self.ops_seen},
                "violations": [asdict(v) for v in self.violations], "notes": self.notes}


# -- PyTorch level -----------------------------------------------------------------------------------------------
ATEN_MAP: dict[str, tuple[str, ...]] = {
    "linear": ("linear",), "addmm": ("linear",), "mm": ("matmul",), "bmm": ("matmul",), "matmul": ("matmul",),
    "batch_norm": ("batch_norm",), "_native_batch_norm_legit_no_training": ("batch_norm",),
    "layer_norm": ("layer_norm",), "group_norm": ("group_norm",), "relu": ("relu",), "relu_": ("relu",),
    "relu6": ("relu6",), "hardswish": ("hardswish",), "hardswish_": ("hardswish",), "hardsigmoid": ("hardsigmoid",),
    "hardsigmoid_": ("hardsigmoid",), "gelu": ("gelu",), "silu": ("silu",), "silu_": ("silu",),
    "sigmoid": ("sigmoid",), "tanh": ("tanh",), "softmax": ("softmax",), "_softmax": ("softmax",),
    "scaled_dot_product_attention": ("matmul", "softmax"), "add": ("add",), "add_": ("add",), "sub": ("sub",),
    "rsub": ("sub",), "mul": ("mul",), "mul_": ("mul",), "div": ("div",), "pow": ("pow",), "sqrt": ("sqrt",),
    "rsqrt": ("rsqrt",), "exp": ("exp",), "erf": ("erf",), "cat": ("concat",), "concat": ("concat",),
    "stack": ("concat",), "view": ("reshape",), "reshape": ("reshape",), "_unsafe_view": ("reshape",),
    "flatten": ("reshape",), "unflatten": ("reshape",), "squeeze": ("reshape",), "unsqueeze": ("reshape",),
    "permute": ("transpose",), "transpose": ("transpose",), "t": ("transpose",), "select": ("slice",),
    "slice": ("slice",), "narrow": ("slice",), "split": ("slice",), "split_with_sizes": ("slice",),
    "chunk": ("slice",), "unbind": ("slice",), "index": ("gather",), "index_select": ("gather",),
    "gather": ("gather",), "pad": ("pad",), "constant_pad_nd": ("pad",), "embedding": ("embedding",),
    "one_hot": ("one_hot",), "roll": ("roll",), "expand": ("expand",), "repeat": ("expand",),
    "ne": ("compare",), "eq": ("compare",), "lt": ("compare",), "gt": ("compare",), "masked_fill": ("select",),
    "where": ("select",), "fill_": ("scatter",), "copy_": ("scatter",), "index_put_": ("scatter",),
    "slice_scatter": ("scatter",), "to": ("cast",), "_to_copy": ("cast",), "upsample_nearest2d": ("resize",),
    "upsample_bilinear2d": ("resize",), "amax": ("reduce_other",), "sum": ("reduce_other",),
}
ATEN_IGNORED = ("dropout", "dropout_", "clone", "contiguous", "alias", "detach", "lift_fresh_copy",
                "_assert_tensor_metadata", "sym_size", "_assert_scalar", "new_zeros", "zeros", "ones", "full",
                "arange", "scalar_tensor", "zeros_like", "empty", "feature_dropout")


def _shape(node: Any) -> tuple[int, ...]:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(int(d) for d in val.shape) if isinstance(val, torch.Tensor) else ()


def _arg(node: torch.fx.Node, i: int, default: Any) -> Any:
    return node.args[i] if len(node.args) > i and node.args[i] not in (None, []) else default


def aten_use(node: torch.fx.Node) -> OpUse | None:
    """The canonical op of one exported-graph node (None: structural, folded or not an operator)."""
    from edgeship.core.graph import node_module

    target = str(node.target)
    parts = target.split(".")
    if parts[0] == "quantized_decomposed":
        return OpUse("pytorch", parts[1], ("quant",), node_module(node) or node.name)
    if parts[0] != "aten" or len(parts) < 2 or parts[1] in ATEN_IGNORED:
        return None
    base = parts[1]
    use = OpUse("pytorch", base, ATEN_MAP.get(base, (f"?{base}",)), node_module(node) or node.name)
    if base in ("conv1d", "conv2d", "convolution"):
        w = _shape(node.args[1])
        groups = int(_arg(node, 8 if base == "convolution" else 6, 1))
        stride = _arg(node, 3, [1])
        use.canonical, use.kernel = ("conv",), max(w[2:]) if len(w) > 2 else 1
        use.stride = int(max(stride)) if isinstance(stride, list | tuple) else int(stride)
        use.in_channels = _shape(node.args[0])[1] if len(_shape(node.args[0])) > 1 else None
        use.depthwise = groups > 1 and groups == use.in_channels
    elif base in ("max_pool2d", "avg_pool2d", "max_pool2d_with_indices"):
        k = _arg(node, 1, [1])
        use.canonical = ("max_pool",) if base.startswith("max") else ("avg_pool",)
        use.kernel = int(max(k))
        use.stride = int(max(_arg(node, 2, k)))
    elif base == "adaptive_avg_pool2d":
        out, inp = _arg(node, 1, [1, 1]), _shape(node.args[0])
        use.canonical = ("global_avg_pool",) if list(out) == [1, 1] else ("avg_pool",)
        if use.canonical == ("avg_pool",) and len(inp) == 4:
            use.kernel = use.stride = max(inp[2] // max(out[0], 1), inp[3] // max(out[1], 1))
    elif base == "mean":
        use.canonical = ("global_avg_pool",) if is_spatial_mean(_arg(node, 1, None), len(_shape(node.args[0]))) \
            else ("reduce_mean",)
    elif base in ("hardtanh", "hardtanh_", "clamp", "clamp_"):
        lo, hi = _arg(node, 1, None), _arg(node, 2, None)
        if base.startswith("hardtanh"):
            lo, hi = (-1.0 if lo is None else lo), (1.0 if hi is None else hi)
        use.canonical = clip_kind(lo, hi)
        if node.users and all(_saturates(u, lo, hi) for u in node.users):
            use.canonical = ("quant",)
    return use


def _saturates(quantize: torch.fx.Node, lo: float | None, hi: float | None) -> bool:
    """True when ``quantize`` is a per-tensor quantize whose own narrower levels [lo, hi] are.

    These are the clamps ``saturate_narrow_activations`` adds for sub-8-bit activations.
    """
    from edgeship.quant.pt2e import container_range

    if "quantize_per_tensor" not in str(quantize.target) or "dequantize" in str(quantize.target):
        return False
    scale, zero, _qmin, _qmax, dtype = quantize.args[1:6]
    container = container_range(dtype)
    return isinstance(scale, float | int) and isinstance(zero, float | int) and container is not None and (
        saturates_quantizer(lo, hi, float(scale), float(zero), container))


def pytorch_ops(model: torch.nn.Module, example: torch.Tensor) -> list[OpUse]:
    """The ops of ``model``'s ``torch.export`` graph (eval mode), named by the modules they came from."""
    from edgeship.core.graph import eval_mode

    try:
        program = torch.export.export(eval_mode(model), (example,))
    except Exception as e:  # the model itself: a converter-level failure (exit 3), not an internal error
        from edgeship.core.errors import ExportError, plain

        raise ExportError(f"the PyTorch graph cannot be exported with torch.export, which checking its ops needs "
                          f"(and the TFLite and OpenVINO converters too): {type(e).__name__}: {plain(str(e), 4)}"
                          ) from None
    return [u for n in program.graph.nodes if n.op == "call_function" and (u := aten_use(n)) is not None]


# -- lint ----------------------------------------------------------------------------------------------------------
def _breaks(use: OpUse, op: str, profile: OpProfile) -> tuple[str, str] | None:
    if op.startswith("?"):
        return ("unmapped_op", f"{use.op} has no canonical name") if not profile.allow_all else None
    if not profile.allows(op):
        return "unsupported_op", f"{op} is not in the {profile.name} profile"
    rule = profile.rule(op)
    if op == "conv" or op in POOLS:
        if op == "conv" and use.depthwise and not rule.depthwise:
            return "depthwise", "depthwise convolution"
        if use.kernel is not None and not profile.kernel_ok(op, use.kernel):
            allowed = rule.kernel_sizes or f"<= {rule.max_kernel}"
            return "kernel_size", f"kernel {use.kernel}x{use.kernel} (allowed {allowed})"
        if use.stride is not None and not profile.stride_ok(op, use.stride):
            return "stride", f"stride {use.stride} (allowed {rule.strides})"
        if (op == "conv" and use.in_channels is not None and rule.max_in_channels is not None
                and use.in_channels > rule.max_in_channels and not use.depthwise):
            return "in_channels", f"{use.in_channels} input channels (max {rule.max_in_channels})"
    return None


def lint(uses: Iterable[OpUse], profile: OpProfile) -> list[Violation]:
    """Group every op instance that breaks ``profile`` by (level, op, reason, detail)."""
    groups: dict[tuple[str, str, str, str, str], Violation] = {}
    for use in uses:
        for op in use.canonical:
            broken = _breaks(use, op, profile)
            if broken is None:
                continue
            key = (use.level, use.op, op, *broken)
            v = groups.setdefault(key, Violation(use.level, use.op, op.lstrip("?"), broken[0], broken[1]))
            v.count += 1
            if len(v.where) < 5:
                v.where.append(use.where)
    return sorted(groups.values(), key=lambda v: (LEVELS.index(v.level), -v.count, v.op))


def bit_violations(bits: list[Any], profile: OpProfile) -> list[Violation]:
    """Quantized layers whose weight or activation bit width the profile does not run."""
    groups: dict[tuple[str, int], Violation] = {}
    for lb in bits:
        for reason, value, allowed in (("weight_bits", lb.weight_bits, profile.weight_bits),
                                       ("act_bits", lb.act_bits, profile.act_bits)):
            if allowed is None or profile.allow_all or value in allowed:
                continue
            v = groups.setdefault((reason, value), Violation(
                "pytorch", lb.kind, lb.kind, reason, f"{value}-bit {reason.split('_')[0]}s (profile runs {allowed})"))
            v.count += 1
            if len(v.where) < 5:
                v.where.append(lb.name)
    return list(groups.values())


def check(profile: OpProfile, model: torch.nn.Module | None = None, example: torch.Tensor | None = None,
          artifacts: dict[str, Path] | None = None, bits: list[Any] | None = None) -> CheckReport:
    """Lint the PyTorch graph of ``model`` (if given) and every artifact file against ``profile``."""
    report = CheckReport(profile=profile.name)
    per_level: dict[str, list[OpUse]] = {}
    if model is not None and example is not None:
        per_level["pytorch"] = pytorch_ops(model, example)
    for fmt, path in (artifacts or {}).items():
        per_level[fmt] = artifact_ops(path)
    for level, uses in per_level.items():
        report.ops_seen[level] = len(uses)
        report.violations.extend(lint(uses, profile))
    if bits:
        report.violations.extend(bit_violations(bits, profile))
    elif model is not None and (profile.weight_bits or profile.act_bits) and not profile.allow_all:
        report.notes.append(f"float model: the {profile.name} profile's bit widths are checked once it is quantized")
    return report


def render(report: CheckReport) -> Any:
    """A rich table of the violations (one row per op, reason and level)."""
    from rich.markup import escape
    from rich.table import Table

    title = (f"check --profile {report.profile}: " + ("no violations" if report.passed else
             f"{report.count()} violating op instances") + "  (ops seen: " +
             ", ".join(f"{lv} {n}" for lv, n in report.ops_seen.items()) + ")")
    table = Table(title=escape(title), title_justify="left")
    for col in ("level", "op", "canonical", "count", "reason", "detail", "where (first)"):
        table.add_column(col, overflow="fold")
    for v in report.violations:
        table.add_row(*(escape(str(c)) for c in (v.level, v.op, v.canonical, v.count, v.reason, v.detail,
                                                 ", ".join(v.where[:2]))))
    return table
