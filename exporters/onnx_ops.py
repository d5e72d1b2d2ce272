"""The operators of an ONNX model in canonical names (``edgeship check`` and every run's op check).

Subgraphs whose inputs are all constants (weight dequantization chains, shape arithmetic on static shapes) are
folded by every runtime before execution and are skipped, so only what runs on activations is listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeship.core.ops import OpUse, clip_kind, container_range, is_spatial_mean, saturates_quantizer
from edgeship.core.ops import canonical as _c

ONNX_MAP: dict[str, tuple[str, ...]] = {
    "Gemm": _c("linear"), "BatchNormalization": _c("batch_norm"), "LayerNormalization": _c("layer_norm"),
    "GroupNormalization": _c("group_norm"), "InstanceNormalization": _c("group_norm"), "Relu": _c("relu"),
    "HardSwish": _c("hardswish"), "HardSigmoid": _c("hardsigmoid"), "Gelu": _c("gelu"), "Erf": _c("erf"),
    "Sigmoid": _c("sigmoid"), "Tanh": _c("tanh"), "Softmax": _c("softmax"), "Add": _c("add"), "Sub": _c("sub"),
    "Mul": _c("mul"), "Div": _c("div"), "Reciprocal": _c("div"), "Pow": _c("pow"), "Sqrt": _c("sqrt"),
    "Exp": _c("exp"), "Concat": _c("concat"), "Reshape": _c("reshape"), "Flatten": _c("reshape"),
    "Squeeze": _c("reshape"), "Unsqueeze": _c("reshape"), "Transpose": _c("transpose"), "Slice": _c("slice"),
    "Split": _c("slice"), "Pad": _c("pad"), "GlobalAveragePool": _c("global_avg_pool"),
    "GlobalMaxPool": _c("max_pool"), "ReduceMax": _c("reduce_other"), "ReduceSum": _c("reduce_other"),
    "ReduceProd": _c("reduce_other"), "QuantizeLinear": _c("quant"), "DequantizeLinear": _c("quant"),
    "Cast": _c("cast"), "Expand": _c("expand"), "Tile": _c("expand"), "Where": _c("select"),
    "Equal": _c("compare"), "Not": _c("compare"), "Less": _c("compare"), "Greater": _c("compare"),
    "ScatterND": _c("scatter"), "ScatterElements": _c("scatter"), "OneHot": _c("one_hot"), "Resize": _c("resize"),
    "GatherElements": _c("gather"), "GatherND": _c("gather"), "Max": _c("clip"), "Min": _c("clip"),
    "Identity": (), "Dropout": (),
}


def onnx_ops(path: Path) -> list[OpUse]:
    """Every activation-path node of an ONNX model (after shape inference), in canonical names."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    g = proto.graph
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*g.value_info, *g.input, *g.output]}
    values: dict[str, np.ndarray] = {}
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
        values[t.name] = numpy_helper.to_array(t) if t.data_location != onnx.TensorProto.EXTERNAL else np.empty(0)
    const = set(values)
    consumers: dict[str, list[Any]] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    uses = []
    for node in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            const.update(node.output)
            if "value" in attrs:
                values[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        ins = [i for i in node.input if i]
        if node.op_type in ("Shape", "Size", "ConstantOfShape", "Range") or (ins and all(i in const for i in ins)):
            const.update(node.output)  # folded before execution (static shapes, weight chains)
            continue
        where = node.name or node.output[0]
        use = OpUse("onnx", node.op_type, ONNX_MAP.get(node.op_type, _c(f"?{node.op_type}")), where)
        op = node.op_type
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w = shapes.get(node.input[3 if op == "QLinearConv" else 1], [])
            group = int(attrs.get("group", 1))
            kernel = list(attrs.get("kernel_shape", w[2:]))
            use.canonical, use.kernel = _c("conv"), max(kernel) if kernel else None
            use.stride = max(attrs.get("strides", [1]))
            cin = shapes.get(node.input[0], [0, 0])
            use.in_channels = cin[1] if len(cin) > 1 and cin[1] else (w[1] * group if len(w) > 1 else None)
            use.depthwise = group > 1 and group == use.in_channels
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            use.canonical = _c("linear") if node.input[1] in const else _c("matmul")
        elif op == "Gather":
            idx = node.input[1]
            scalar = idx in values and values[idx].ndim == 0
            use.canonical = _c("slice") if scalar else _c("gather")
        elif op == "Clip":
            lo, hi = (float(values[n]) if n in values and n else None
                      for n in (*node.input[1:3], "", "")[:2])
            use.canonical = clip_kind(lo, hi)
            quantizers = consumers.get(node.output[0], [])
            if quantizers and all(_onnx_saturates(q, lo, hi, values) for q in quantizers):
                use.canonical = _c("quant")
        elif op == "ReduceMean":
            axes = values.get(node.input[1]) if len(node.input) > 1 else attrs.get("axes")
            use.canonical = _c("global_avg_pool") if is_spatial_mean(axes, len(shapes.get(node.input[0], []))) \
                else _c("reduce_mean")
        elif op in ("MaxPool", "AveragePool"):
            use.canonical = _c("max_pool" if op == "MaxPool" else "avg_pool")
            use.kernel = max(attrs.get("kernel_shape", [1]))
            use.stride = max(attrs.get("strides", [1]))
        uses.append(use)
    return uses


def _onnx_saturates(q: Any, lo: float | None, hi: float | None, values: dict[str, np.ndarray]) -> bool:
    """True when ``q`` is a QuantizeLinear whose own narrower levels [lo, hi] are (see ``saturates_quantizer``)."""
    if q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[1] not in values or q.input[2] not in values:
        return False
    scale, zero = values[q.input[1]], values[q.input[2]]
    container = container_range(zero.dtype)
    return scale.size == 1 and container is not None and saturates_quantizer(
        lo, hi, float(scale.ravel()[0]), float(zero.ravel()[0]), container)
