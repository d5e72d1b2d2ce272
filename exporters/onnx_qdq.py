"""Fold the float-weight Q -> Clip -> DQ chains of a PT2E ONNX export into integer initializers.

torch.onnx emits ``QuantizeLinear -> (Clip) -> DequantizeLinear`` on float weights; folding makes integer
initializers feed ``DequantizeLinear`` directly, so the file shrinks and runtimes see a proper QDQ graph they
execute in integer arithmetic. (onnxruntime's QDQ fusion also drops the Clip, so an unfolded sub-8-bit graph
runs with the wrong weights: measured on a W4 digits CNN.)

The integers are computed exactly as the removed QuantizeLinear/Clip would have computed them (round half to
even, saturate, clip), so the folded graph is numerically identical to the unfolded one. Weights whose clip
range fits [-8, 7] are stored as INT4 (opset 21); everything else as int8/uint8.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

INT4_RANGE = (-8, 7)
MAX_IR_VERSION = 10  # onnxruntime 1.31 refuses IR 14, which onnx 1.23's helpers write by default


def _constant_values(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def int4_tensor(name: str, values: np.ndarray) -> Any:
    """An INT4 ``TensorProto`` with values packed two per byte in ``raw_data`` (first element in the low nibble).

    ``helper.make_tensor`` without ``raw`` stores INT4 as int32 varints (~0.7 bytes per value, measured).
    """
    from onnx import TensorProto, helper

    flat = values.astype(np.int8).ravel()
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int8)])
    nibbles = flat.view(np.uint8) & 0x0F
    packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4, list(values.shape), packed.tobytes(), raw=True)


def _axis(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def fold_weight_qdq(model: Any, int4: bool = True) -> dict[str, Any]:
    """Rewrite ``model`` in place; return counts of folded weights by stored type and bytes saved.

    ``int4``: store weights whose range fits [-8, 7] as INT4; otherwise they stay in int8 containers.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = _constant_values(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers = Counter(i for n in graph.node for i in n.input)
    initializers = {t.name: t for t in graph.initializer}
    removed: set[int] = set()
    new_inits: list[Any] = []
    stats: Counter[str] = Counter()
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear":
            continue
        node = producer.get(dq.input[0])
        clip = None
        if node is not None and node.op_type == "Clip":
            clip, node = node, producer.get(node.input[0])
        if node is None or node.op_type != "QuantizeLinear" or node.input[0] not in initializers:
            continue
        if any(consumers[o] > 1 for o in [*node.output, *(clip.output if clip else [])]):
            continue  # shared: folding would change another consumer
        if not all(name in consts for name in node.input[1:3]):
            continue
        w = consts[node.input[0]].astype(np.float64)
        if w.ndim == 0:
            continue  # a quantized scalar (e.g. a constant operand in swin_t's attention): nothing to fold
        scale, zero = consts[node.input[1]].astype(np.float64), consts[node.input[2]]
        axis = _axis(node) % w.ndim
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        q = np.rint(w / scale.reshape(shape)) + zero.astype(np.int64).reshape(shape)
        info = np.iinfo(zero.dtype)
        lo, hi = info.min, info.max
        if clip is not None:
            lo = max(lo, int(consts[clip.input[1]])) if len(clip.input) > 1 and clip.input[1] else lo
            hi = min(hi, int(consts[clip.input[2]])) if len(clip.input) > 2 and clip.input[2] else hi
        q = np.clip(q, lo, hi).astype(np.int64)
        as_int4 = int4 and zero.dtype == np.int8 and lo >= INT4_RANGE[0] and hi <= INT4_RANGE[1] and np.all(zero == 0)
        base = node.input[0]
        if as_int4:
            qt, zt = int4_tensor(f"{base}_int4", q), int4_tensor(f"{base}_int4_zero", zero)
            stats["int4"] += 1
        else:
            qt = numpy_helper.from_array(q.astype(zero.dtype), f"{base}_{zero.dtype.name}")
            zt = numpy_helper.from_array(zero, f"{base}_{zero.dtype.name}_zero")
            stats[zero.dtype.name] += 1
        new_inits += [qt, zt]
        dq.input[0], dq.input[1], dq.input[2] = qt.name, node.input[1], zt.name
        if scale.ndim == 1 and scale.size > 1:
            keep = [a for a in dq.attribute if a.name != "axis"]
            del dq.attribute[:]
            dq.attribute.extend([*keep, helper.make_attribute("axis", axis)])
        removed.update({id(node), id(clip)} if clip else {id(node)})
    if not removed:
        return {"folded": 0}
    kept = [n for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    before = sum(t.ByteSize() for t in graph.initializer)
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)
    after = sum(t.ByteSize() for t in graph.initializer)
    if stats["int4"]:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < 21:
                opset.version = 21
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(model)
    return {"folded": int(sum(stats.values())), "by_type": dict(stats), "initializer_bytes_saved": before - after}

def widen_int4(model: Any) -> int:
    """Store every INT4 initializer as INT8 (same values), in place; return how many were widened.

    OpenVINO 2026.4 reads INT4 weight initializers into wrong convolution results on a W2A4 model (agreement
    with onnxruntime 0.925 on the same file; 1.0 once widened; W4A8 models were unaffected), so the OpenVINO
    exporter converts from a widened copy.
    """
    from onnx import TensorProto, numpy_helper

    widened = 0
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == TensorProto.INT4:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.int8),
                                                                        t.name))
            widened += 1
    return widened


def activations_to_uint8(model: Any) -> int:
    """Re-express int8 activation Q/DQ pairs as uint8 (zero point + 128); return how many zero points changed.

    The real values are identical (q_u8 = q_s8 + 128 on the same scale), so nothing is re-quantized. onnxruntime's
    fast x86 integer kernels are u8 activations x s8 weights; with int8 activations it leaves most convs in float
    (measured on resnet18: 9 of 20 convs fused with int8 activations, all 20 with uint8).
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    weight_zero_points = {n.input[2] for n in graph.node
                          if n.op_type == "DequantizeLinear" and len(n.input) > 2 and n.input[0] in inits}
    activation_zero_points = {n.input[2] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    changed: set[str] = set()
    for name in sorted(activation_zero_points - weight_zero_points):
        t = inits.get(name)
        if t is None:
            continue
        zero = numpy_helper.to_array(t)
        if zero.dtype != np.int8:
            continue
        t.CopyFrom(numpy_helper.from_array((zero.astype(np.int16) + 128).astype(np.uint8), name))
        changed.add(name)
    # The exporter's value_info still declares those zero points and Q outputs int8; drop the stale declarations.
    stale = changed | {n.output[0] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
                       and n.input[2] in changed}
    kept = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return len(changed)
