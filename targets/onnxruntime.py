"""onnxruntime CPU execution provider."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from targets.base import OpInfo, Target


class OnnxRuntimeTarget(Target):
    """Runs ``.onnx`` with onnxruntime's CPU EP, intra-op threads fixed, full graph optimisation."""

    name = "onnxruntime"
    format = "onnx"
    library = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._so = so
        self.session = ort.InferenceSession(str(self.artifact.path), so, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self.precision = self._weight_precision()

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]

    def _weight_precision(self) -> str:
        import onnx

        model = onnx.load(str(self.artifact.path), load_external_data=False)
        dtypes = {onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer}
        return "fp32" if dtypes <= {"float32", "int64", "int32"} else "+".join(sorted(dtypes))

    def op_report(self) -> list[OpInfo]:
        """Node types of the graph onnxruntime executes, with their output element types."""
        import onnx

        model = onnx.load(str(self.artifact.path), load_external_data=False)
        counts: Counter[tuple[str, str]] = Counter()
        inferred = onnx.shape_inference.infer_shapes(model)
        elem: dict[str, Any] = {v.name: v.type.tensor_type.elem_type for v in
                                [*inferred.graph.value_info, *inferred.graph.output]}
        for node in model.graph.node:
            t = elem.get(node.output[0]) if node.output else None
            prec = onnx.helper.tensor_dtype_to_np_dtype(t).name if t else "float32"
            counts[(node.op_type, prec)] += 1
        return [OpInfo(op=op, precision=p, count=n) for (op, p), n in sorted(counts.items())]
