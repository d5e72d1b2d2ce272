"""onnxruntime CPU execution provider."""

from __future__ import annotations

import os
import tempfile
from collections import Counter

import numpy as np

from edgeship.targets.base import OpInfo, RuntimeSession

# Kernels onnxruntime runs in integer arithmetic after its QDQ fusions; a Conv/Gemm/MatMul left in the optimized
# graph means that layer fell back to float (its DequantizeLinear ran first).
INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
                   "DynamicQuantizeMatMul", "QLinearConvTranspose", "MatMulNBits"}
FLOAT_KERNELS = {"Conv", "FusedConv", "NchwcConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose"}


class OnnxRuntimeSession(RuntimeSession):
    """Runs ``.onnx`` with onnxruntime's CPU EP, intra-op threads fixed, full graph optimisation."""

    name = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Keep the graph after onnxruntime's own fusions: it says which kernels really run.
        fd, optimized = tempfile.mkstemp(suffix=".onnx")
        os.close(fd)
        so.optimized_model_filepath = optimized
        try:
            self.session = ort.InferenceSession(str(self.artifact.path), so, providers=["CPUExecutionProvider"])
            self._kernels = self._read_kernels(optimized)
        finally:
            os.unlink(optimized)
        self._input = self.session.get_inputs()[0].name

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]

    @staticmethod
    def _read_kernels(path: str) -> Counter[str]:
        import onnx

        try:
            return Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)
        except Exception:  # an optimized graph with contrib layouts may not reload; the op list is still useful
            return Counter()

    def _op_report(self) -> list[OpInfo]:
        """Node types of the graph after onnxruntime's optimisations (fused integer kernels vs float)."""
        ops = []
        for op, n in sorted(self._kernels.items()):
            precision = "int8" if op in INTEGER_KERNELS else "float32"
            ops.append(OpInfo(op=op, precision=precision, count=n, compute=op in INTEGER_KERNELS | FLOAT_KERNELS))
        return ops
