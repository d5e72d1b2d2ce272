"""List the operators of an exported artifact (ONNX, TFLite, OpenVINO IR) in edgeship's canonical names.

Each op becomes an ``OpUse`` with the attributes profiles constrain (kernel, stride, input channels, depthwise).
Subgraphs whose inputs are all constants (weight dequantization chains, shape arithmetic on static shapes) are
folded by every runtime before execution and are skipped, so only what runs on activations is listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class OpUse:
    """One operator instance: where it is, its native name, the canonical ops it needs, and its attributes."""

    level: str  # pytorch | onnx | tflite | openvino
    op: str
    canonical: tuple[str, ...]
    where: str
    kernel: int | None = None
    stride: int | None = None
    in_channels: int | None = None
    depthwise: bool = False


def _c(*names: str) -> tuple[str, ...]:
    return names


def clip_kind(lo: float | None, hi: float | None) -> tuple[str, ...]:
    """relu6 for [0, 6], relu for [0, inf), else a generic clip."""
    if lo == 0 and hi == 6:
        return _c("relu6")
    if lo == 0 and hi is None:
        return _c("relu")
    return _c("clip")


def saturates_quantizer(lo: float | None, hi: float | None, scale: float, zero: float,
                        container: tuple[int, int]) -> bool:
    """True when clamping to [lo, hi] is a quantizer's own saturation.

    Both ends are integer levels of the quantizer (``scale``, ``zero``) and the range is narrower than its
    ``container``. That is how a sub-8-bit activation is carried in an 8-bit tensor (a clamp to its levels,
    then the 8-bit quantize); a 4-bit NPU does it inside its quantizer, so the linter counts it as
    quantization, not a clip.
    """
    if scale <= 0:
        return False
    levels = [container[0] if lo is None else lo / scale + zero, container[1] if hi is None else hi / scale + zero]
    on_grid = all(abs(q - round(q)) < 1e-3 and container[0] <= round(q) <= container[1] for q in levels)
    return on_grid and round(levels[1]) - round(levels[0]) < container[1] - container[0]


def container_range(dtype: Any) -> tuple[int, int] | None:
    """The integer range of an 8-bit container (int8 or uint8); None for any other dtype."""
    if np.dtype(dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
        return None
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def is_spatial_mean(axes: Any, ndim: int | None, layout: str = "nchw") -> bool:
    """True when a mean reduces exactly the two spatial axes of a 4-D tensor (a global average pool)."""
    if axes is None or ndim != 4:
        return False
    norm = sorted(int(a) % 4 for a in np.atleast_1d(axes))
    return norm == ([2, 3] if layout == "nchw" else [1, 2])


# -- ONNX ---------------------------------------------------------------------------------------------------------
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


# -- TFLite -------------------------------------------------------------------------------------------------------
TFLITE_MAP: dict[str, tuple[str, ...]] = {
    "FULLY_CONNECTED": _c("linear"), "ADD": _c("add"), "SUB": _c("sub"), "MUL": _c("mul"), "DIV": _c("div"),
    "RELU": _c("relu"), "RELU6": _c("relu6"), "RELU_N1_TO_1": _c("clip"), "RELU_0_TO_1": _c("clip"),
    "HARD_SWISH": _c("hardswish"), "LOGISTIC": _c("sigmoid"), "TANH": _c("tanh"), "GELU": _c("gelu"),
    "SOFTMAX": _c("softmax"), "CONCATENATION": _c("concat"), "PACK": _c("concat"), "RESHAPE": _c("reshape"),
    "SQUEEZE": _c("reshape"), "EXPAND_DIMS": _c("reshape"), "TRANSPOSE": _c("transpose"), "SLICE": _c("slice"),
    "STRIDED_SLICE": _c("slice"), "SPLIT": _c("slice"), "SPLIT_V": _c("slice"), "UNPACK": _c("slice"),
    "GATHER": _c("gather"), "GATHER_ND": _c("gather"), "PAD": _c("pad"), "PADV2": _c("pad"),
    "MIRROR_PAD": _c("pad"), "SUM": _c("reduce_other"), "REDUCE_MAX": _c("reduce_other"),
    "REDUCE_PROD": _c("reduce_other"), "SQUARED_DIFFERENCE": _c("squared_difference"), "RSQRT": _c("rsqrt"),
    "SQRT": _c("sqrt"), "EXP": _c("exp"), "POW": _c("pow"), "QUANTIZE": _c("quant"), "DEQUANTIZE": _c("quant"),
    "CAST": _c("cast"), "SELECT": _c("select"), "SELECT_V2": _c("select"), "EQUAL": _c("compare"),
    "NOT_EQUAL": _c("compare"), "LESS": _c("compare"), "GREATER": _c("compare"), "BROADCAST_TO": _c("expand"),
    "TILE": _c("expand"), "RESIZE_BILINEAR": _c("resize"), "RESIZE_NEAREST_NEIGHBOR": _c("resize"),
    "SCATTER_ND": _c("scatter"), "MAXIMUM": _c("clip"), "MINIMUM": _c("clip"), "ARG_MAX": _c("reduce_other"),
}


def _options(op: Any, cls: type) -> Any:
    """The builtin options table of a TFLite operator, read as ``cls``."""
    opts, table = cls(), op.BuiltinOptions()
    opts.Init(table.Bytes, table.Pos)
    return opts


TFLITE_CONTAINERS = {9: np.int8, 3: np.uint8}  # schema TensorType INT8, UINT8


def _tflite_grid(t: Any) -> tuple[float, float, tuple[int, int]] | None:
    """(scale, zero point, container) of a per-tensor quantized 8-bit TFLite tensor; None otherwise."""
    q = t.Quantization()
    if q is None or q.ScaleLength() != 1 or t.Type() not in TFLITE_CONTAINERS:
        return None
    return float(q.ScaleAsNumpy()[0]), float(q.ZeroPointAsNumpy()[0]), container_range(TFLITE_CONTAINERS[t.Type()])


def _tflite_value(model: Any, t: Any) -> float | None:
    """The real value of a one-element quantized constant tensor."""
    grid, buf = _tflite_grid(t), model.Buffers(t.Buffer())
    if grid is None or buf is None or buf.DataLength() != 1:
        return None
    q = float(np.frombuffer(buf.DataAsNumpy().tobytes(), TFLITE_CONTAINERS[t.Type()])[0])
    return (q - grid[1]) * grid[0]


def tflite_ops(path: Path) -> list[OpUse]:
    """Every activation-path op of a TFLite flatbuffer, with stride and kernel read from the op options."""
    from ai_edge_litert import schema_py_generated as fb

    buf = Path(path).read_bytes()
    model = fb.Model.GetRootAs(buf, 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        codes.append(names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "CUSTOM"))
    uses = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)

        def tensor(i: int, sg: Any = sg) -> Any:
            return sg.Tensors(int(i))

        def is_const(i: int) -> bool:
            b = model.Buffers(tensor(i).Buffer())
            return b is not None and (b.DataLength() > 0 or b.Offset() > 1)

        produced_const: set[int] = set()
        for j in range(sg.OperatorsLength()):
            o = sg.Operators(j)
            name = codes[o.OpcodeIndex()]
            ins = [int(i) for i in o.InputsAsNumpy() if i >= 0] if o.InputsLength() else []
            outs = [int(i) for i in o.OutputsAsNumpy()] if o.OutputsLength() else []
            if ins and all(is_const(i) or i in produced_const for i in ins):
                produced_const.update(outs)
                continue
            # Tensor names carry the whole module path; its last component (minus ";N") is enough to find it.
            label = tensor(outs[0]).Name().decode().rsplit("/", 1)[-1].split(";")[0] if outs else ""
            use = OpUse("tflite", name, TFLITE_MAP.get(name, _c(f"?{name}")), f"#{j} {label}".strip())
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = tensor(ins[1]).ShapeAsNumpy()
                opts = _options(o, fb.Conv2DOptions if name == "CONV_2D" else fb.DepthwiseConv2DOptions)
                use.canonical, use.kernel = _c("conv"), int(max(w[1], w[2]))
                use.stride = int(max(opts.StrideH(), opts.StrideW()))
                use.in_channels = int(tensor(ins[0]).ShapeAsNumpy()[-1])
                # TFLite writes a one-input-channel conv as depthwise: it is a dense conv all the same.
                use.depthwise = name == "DEPTHWISE_CONV_2D" and use.in_channels > 1
            elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
                opts = _options(o, fb.Pool2DOptions)
                use.canonical = _c("max_pool" if name == "MAX_POOL_2D" else "avg_pool")
                use.kernel = int(max(opts.FilterHeight(), opts.FilterWidth()))
                use.stride = int(max(opts.StrideH(), opts.StrideW()))
            elif name in ("MINIMUM", "MAXIMUM") and len(ins) == 2 and is_const(ins[1]):
                bound = _tflite_value(model, tensor(ins[1]))
                grid = _tflite_grid(tensor(outs[0]))
                if bound is not None and grid is not None and grid == _tflite_grid(tensor(ins[0])) and (
                        saturates_quantizer(*((None, bound) if name == "MINIMUM" else (bound, None)), *grid)):
                    use.canonical = _c("quant")
            elif name == "BATCH_MATMUL":
                use.canonical = _c("linear") if is_const(ins[1]) else _c("matmul")
            elif name == "MEAN":
                axes_buf = model.Buffers(tensor(ins[1]).Buffer())
                axes = np.frombuffer(axes_buf.DataAsNumpy().tobytes(), np.int32) if axes_buf.DataLength() else None
                ndim = len(tensor(ins[0]).ShapeAsNumpy())
                use.canonical = _c("global_avg_pool") if is_spatial_mean(axes, ndim, "nhwc") else _c("reduce_mean")
            uses.append(use)
    return uses


# -- OpenVINO -----------------------------------------------------------------------------------------------------
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


ARTIFACT_READERS = {".onnx": onnx_ops, ".tflite": tflite_ops, ".xml": openvino_ops}


def artifact_ops(path: Path) -> list[OpUse]:
    """The ops of the artifact at ``path`` (``.onnx``, ``.tflite`` or OpenVINO ``.xml``)."""
    from pipeline.errors import ArtifactError, ConfigError

    reader = ARTIFACT_READERS.get(Path(path).suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: cannot list ops of this file; expected one of {', '.join(ARTIFACT_READERS)}")
    if not Path(path).is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return reader(Path(path))
    except Exception as e:
        raise ArtifactError(f"{path}: could not read the model ({type(e).__name__}: {e})") from e
