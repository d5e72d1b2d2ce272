"""LiteRT (``ai_edge_litert.interpreter``) with the XNNPACK CPU delegate.

tflite-runtime stopped at 2.14 and does not load with numpy 2; ``ai-edge-litert`` is its maintained
successor and runs the same ``.tflite`` flatbuffers.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgeship.targets.base import OpInfo, RuntimeSession

COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}


def kernel_precision(op: str, inputs: list[str], outputs: list[str]) -> str:
    """The precision an op's kernel runs at, from its tensors' element types (numpy names).

    The weight (input 1) type decides the kernel for conv/FC, ``int16x8`` with int16 activations; otherwise the
    output's type.
    """
    if op in COMPUTE_OPS and inputs and inputs[0] == "int16":
        return "int16x8"  # int16 activations x int8 weights
    if op in COMPUTE_OPS and len(inputs) > 1:
        return inputs[1]
    return outputs[0] if outputs else "unknown"


class LiteRTSession(RuntimeSession):
    """Runs ``.tflite`` with LiteRT; XNNPACK is applied by default for float and int8 graphs."""

    name = "litert"

    def _load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(self.artifact.path), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        # Integer I/O: quantize with the tensor's own (scale, zero_point), never a guessed one.
        scale, zero = self._in["quantization"]
        if self._in["dtype"] != np.float32 and scale:
            info = np.iinfo(self._in["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self._in["dtype"])
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out["index"])
        scale, zero = self._out["quantization"]
        if self._out["dtype"] != np.float32 and scale:
            y = (y.astype(np.float32) - zero) * scale
        return y

    def _op_report(self) -> list[OpInfo]:
        """Tensor element types by builtin op (from the interpreter's op details)."""
        tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        counts: Counter[tuple[str, str]] = Counter()
        for op in self.interpreter._get_ops_details():  # noqa: SLF001 - the only op listing LiteRT exposes
            ins, outs = ([np.dtype(tensors[i]["dtype"]).name for i in op.get(side, []) if i in tensors]
                         for side in ("inputs", "outputs"))
            counts[(op["op_name"], kernel_precision(op["op_name"], ins, outs))] += 1
        return [OpInfo(op=op, precision=p, count=n, compute=op in COMPUTE_OPS) for (op, p), n in sorted(counts.items())]
