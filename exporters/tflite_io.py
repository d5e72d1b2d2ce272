"""Post-process litert-torch's full-integer ``.tflite``: 16x8 biases, and float32 I/O.

A QUANTIZE op goes in front of each integer input and a DEQUANTIZE op behind each integer output, using those
tensors' own scale and zero point.

litert-torch lowers a PT2E model with int8 model inputs/outputs. Most callers feed float images and want float
logits; the boundary ops cost nothing measurable and keep the integer graph in between untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INTEGER_TYPES = {"INT8", "UINT8", "INT16"}


def _opcode_index(model: Any, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as fb

    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = builtin if builtin < fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES else (
        fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_twin(sub: Any, index: int, suffix: str) -> int:
    from ai_edge_litert import schema_py_generated as fb

    src = sub.tensors[index]
    t = fb.TensorT()
    t.shape = np.array(src.shape, dtype=np.int32) if src.shape is not None else None
    t.shapeSignature = src.shapeSignature
    t.type = fb.TensorType.FLOAT32
    t.buffer = 0  # buffer 0 is the empty sentinel: an activation tensor
    t.name = (src.name.decode() if isinstance(src.name, bytes) else str(src.name)) + suffix
    sub.tensors.append(t)
    return len(sub.tensors) - 1


def _wrap_boundary(sub: Any, boundary: Any, opcode: int, is_input: bool, remap: dict[int, int],
                   changed: list[str]) -> tuple[list[int], list[Any]]:
    """Give each integer boundary tensor a float twin joined to it by a (DE)QUANTIZE op."""
    from ai_edge_litert import schema_py_generated as fb

    type_names = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    tensors, ops = [], []
    for idx in boundary:
        type_name = type_names.get(sub.tensors[idx].type)
        if type_name in INTEGER_TYPES:
            twin = _float_twin(sub, idx, "_float")
            src, dst = (twin, idx) if is_input else (idx, twin)
            op = fb.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = opcode, np.array([src], np.int32), np.array([dst], np.int32)
            ops.append(op)
            remap[idx] = twin
            changed.append(type_name)
            idx = twin
        tensors.append(idx)
    return tensors, ops


BIASED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def widen_16x8_biases(model: Any) -> int:
    """Store int32 biases of ops with int16 inputs as int64 (same integers): TFLite's 16x8 kernels require it.

    litert-torch lowers a PT2E model with int16 activations but keeps int32 biases, which the interpreter then
    refuses ("bias->type != kTfLiteInt64").
    """
    from ai_edge_litert import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    widened = 0
    for sub in model.subgraphs:
        for op in sub.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) not in BIASED_OPS:
                continue
            inputs = list(op.inputs)
            if len(inputs) < 3 or inputs[2] < 0 or sub.tensors[inputs[0]].type != fb.TensorType.INT16:
                continue
            bias = sub.tensors[inputs[2]]
            buffer = model.buffers[bias.buffer]
            if bias.type != fb.TensorType.INT32 or buffer.data is None:
                continue
            values = np.frombuffer(np.asarray(buffer.data, dtype=np.uint8).tobytes(), dtype="<i4").astype("<i8")
            buffer.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
            bias.type = fb.TensorType.INT64
            widened += 1
    return widened


def postprocess(data: bytes, float_boundary: bool, uint8_pixels: bool = False) -> tuple[bytes, dict[str, Any]]:
    """Make a model from litert-torch loadable and convenient; return the bytes and the changes.

    Widens 16x8 biases (always needed); with ``float_boundary`` gives it float32 I/O (``float_io``); with
    ``uint8_pixels`` its float inputs become raw uint8 pixels (``uint8_pixel_inputs``).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    changes: dict[str, Any] = {"widened_16x8_biases": widen_16x8_biases(model)}
    if float_boundary:
        changes["float_io"] = float_io(model)
    if uint8_pixels:
        changes["uint8_pixel_inputs"] = uint8_pixel_inputs(model)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), changes


def float_io(model: Any) -> dict[str, Any]:
    """Give ``model`` (a ``ModelT``) float32 inputs/outputs wherever they were integer; return what changed."""
    from ai_edge_litert import schema_py_generated as fb

    changed: dict[str, Any] = {"inputs": [], "outputs": []}
    for sub_index, sub in enumerate(model.subgraphs):
        remap: dict[int, int] = {}
        quant, dequant = (_opcode_index(model, fb.BuiltinOperator.QUANTIZE),
                          _opcode_index(model, fb.BuiltinOperator.DEQUANTIZE))
        new_inputs, front = _wrap_boundary(sub, sub.inputs, quant, True, remap, changed["inputs"])
        new_outputs, back = _wrap_boundary(sub, sub.outputs, dequant, False, remap, changed["outputs"])
        sub.operators = front + list(sub.operators or []) + back
        sub.inputs, sub.outputs = np.array(new_inputs, np.int32), np.array(new_outputs, np.int32)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex != sub_index:
                continue
            for tm in [*(sig.inputs or []), *(sig.outputs or [])]:
                tm.tensorIndex = remap.get(tm.tensorIndex, tm.tensorIndex)
    return changed


def uint8_pixel_inputs(model: Any) -> int:
    """Give every float32 input of ``model`` a uint8 twin at scale 1/255, zero point 0, joined by a DEQUANTIZE.

    The model then takes raw 8-bit pixels, as a camera pipeline hands them; pixel p dequantizes to p/255, which a
    pixel-input model's 1/255 input quantizer maps back to exactly p. Returns how many inputs changed.
    """
    from ai_edge_litert import schema_py_generated as fb

    changed = 0
    for sub_index, sub in enumerate(model.subgraphs):
        dequant = _opcode_index(model, fb.BuiltinOperator.DEQUANTIZE)
        remap, front, inputs = {}, [], []
        for idx in sub.inputs:
            if sub.tensors[idx].type != fb.TensorType.FLOAT32:
                inputs.append(idx)
                continue
            twin = _float_twin(sub, idx, "_uint8")
            sub.tensors[twin].type = fb.TensorType.UINT8
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = np.array([1 / 255], np.float32), np.array([0], np.int64)
            sub.tensors[twin].quantization = q
            op = fb.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = dequant, np.array([twin], np.int32), np.array([idx], np.int32)
            front.append(op)
            remap[idx] = twin
            inputs.append(twin)
            changed += 1
        sub.operators = front + list(sub.operators or [])
        sub.inputs = np.array(inputs, np.int32)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == sub_index:
                for tm in sig.inputs or []:
                    tm.tensorIndex = remap.get(tm.tensorIndex, tm.tensorIndex)
    return changed
