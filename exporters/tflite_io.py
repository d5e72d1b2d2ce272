"""Give a full-integer ``.tflite`` float32 I/O.

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


def float_io(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Return the model with float32 inputs/outputs wherever they were integer, and what was changed."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
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
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), changed
