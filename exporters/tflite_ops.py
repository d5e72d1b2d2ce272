"""The operators of a TFLite flatbuffer in canonical names, with kernel and stride read from the op options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeship.core.ops import OpUse, container_range, is_spatial_mean, saturates_quantizer
from edgeship.core.ops import canonical as _c

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
