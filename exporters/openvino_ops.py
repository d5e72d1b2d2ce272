"""The operators of an OpenVINO IR in canonical names, and the FakeQuantize grid the exporter's rewrite reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeship.core.ops import OpUse, clip_kind, is_spatial_mean, saturates_quantizer
from edgeship.core.ops import canonical as _c

OPENVINO_MAP: dict[str, tuple[str, ...]] = {
    "Add": _c("add"), "Subtract": _c("sub"), "Multiply": _c("mul"), "Divide": _c("div"), "Power": _c("pow"),
    "Sqrt": _c("sqrt"), "Exp": _c("exp"), "BatchNormInference": _c("batch_norm"), "MVN": _c("layer_norm"),
    "NormalizeL2": _c("reduce_other"), "Relu": _c("relu"), "HSwish": _c("hardswish"),
    "HSigmoid": _c("hardsigmoid"), "Gelu": _c("gelu"), "Swish": _c("silu"), "Sigmoid": _c("sigmoid"),
    "Tanh": _c("tanh"), "Erf": _c("erf"), "SoftMax": _c("softmax"), "Softmax": _c("softmax"),
    "Concat": _c("concat"), "Reshape": _c("reshape"), "Squeeze": _c("reshape"), "Unsqueeze": _c("reshape"),
    "Transpose": _c("transpose"), "StridedSlice": _c("slice"), "Slice": _c("slice"), "Split": _c("slice"),
    "VariadicSplit": _c("slice"), "Pad": _c("pad"), "ReduceProd": _c("reduce_other"),
    "ReduceSum": _c("reduce_other"), "ReduceMax": _c("reduce_other"), "FakeQuantize": _c("quant"),
    "Convert": _c("cast"), "ScaledDotProductAttention": _c("matmul", "softmax"), "Roll": _c("roll"),
    "Broadcast": _c("expand"), "Tile": _c("expand"), "ScatterNDUpdate": _c("scatter"),
    "ScatterUpdate": _c("scatter"), "Equal": _c("compare"), "NotEqual": _c("compare"), "Less": _c("compare"),
    "Greater": _c("compare"), "Select": _c("select"), "Interpolate": _c("resize"), "Maximum": _c("clip"),
    "Minimum": _c("clip"),
}
OPENVINO_STRUCTURAL = ("Parameter", "Result", "Constant", "ShapeOf", "Range")


def openvino_ops(path: Path) -> list[OpUse]:
    """Every activation-path op of an OpenVINO IR as stored (before the CPU plugin's fusions)."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    const: set[str] = set()
    uses = []
    for op in model.get_ordered_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        inputs = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if kind in OPENVINO_STRUCTURAL or (inputs and all(n.get_friendly_name() in const for n in inputs)):
            if kind != "Parameter":
                const.add(name)
            continue
        if kind == "Add" and len(inputs) == 2 and inputs[1].get_friendly_name() in const and (
                inputs[0].get_type_name() in ("Convolution", "GroupConvolution", "MatMul")):
            continue  # the bias of the conv/FC before it (ONNX and TFLite carry it inside the op)
        attrs = op.get_attributes()
        use = OpUse("openvino", kind, OPENVINO_MAP.get(kind, _c(f"?{kind}")), name)
        if kind in ("Convolution", "GroupConvolution"):
            w = list(op.input_value(1).get_partial_shape().to_shape())
            cin = op.input_value(0).get_partial_shape()
            use.canonical, use.kernel = _c("conv"), int(max(w[-2:]))
            use.stride = int(max(attrs.get("strides", [1])))
            use.in_channels = int(cin[1].get_length()) if cin.rank.get_length() > 1 and cin[1].is_static else None
            use.depthwise = kind == "GroupConvolution" and w[0] > 1 and w[2] == 1
        elif kind == "MatMul":
            use.canonical = _c("linear") if inputs[1].get_friendly_name() in const else _c("matmul")
        elif kind == "Gather":
            idx = op.input_value(1)
            scalar = idx.get_node().get_friendly_name() in const and idx.get_partial_shape().rank.get_length() == 0
            use.canonical = _c("slice") if scalar else _c("gather")
        elif kind == "Clamp":
            use.canonical = clip_kind(float(attrs["min"]), float(attrs["max"]))
            quantizers = [t.get_node() for t in op.output(0).get_target_inputs()]
            if quantizers and all(openvino_saturates(q, float(attrs["min"]), float(attrs["max"]))
                                  for q in quantizers):
                use.canonical = _c("quant")
        elif kind == "ReduceMean":
            axes_node = inputs[1]
            axes = axes_node.get_data() if axes_node.get_type_name() == "Constant" else None
            use.canonical = _c("global_avg_pool") if is_spatial_mean(
                axes, op.input_value(0).get_partial_shape().rank.get_length()) else _c("reduce_mean")
        elif kind in ("MaxPool", "AvgPool"):
            use.canonical = _c("max_pool" if kind == "MaxPool" else "avg_pool")
            use.kernel = int(max(attrs.get("kernel", [1])))
            use.stride = int(max(attrs.get("strides", [1])))
        uses.append(use)
    return uses


def fake_quantize_grid(fq: Any) -> tuple[float, float, int] | None:
    """(input low, step, levels) of a per-tensor OpenVINO FakeQuantize; None for any other op."""
    if fq.get_type_name() != "FakeQuantize":
        return None
    bounds = [fq.input_value(i).get_node() for i in (1, 2)]
    if any(b.get_type_name() != "Constant" or b.get_data().size != 1 for b in bounds):
        return None
    in_lo, in_hi = (float(b.get_data().ravel()[0]) for b in bounds)
    levels = int(fq.get_attributes()["levels"])
    return in_lo, (in_hi - in_lo) / (levels - 1), levels


def openvino_saturates(fq: Any, lo: float, hi: float) -> bool:
    """True when ``fq`` is a per-tensor FakeQuantize whose own narrower levels [lo, hi] are."""
    grid = fake_quantize_grid(fq)
    if grid is None:
        return False
    in_lo, step, levels = grid
    return saturates_quantizer(lo, hi, step, -in_lo / step, (0, levels - 1))
