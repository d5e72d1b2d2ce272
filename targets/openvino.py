"""OpenVINO runtime on the CPU plugin.

On CPUs with bf16/fp16 support the plugin silently runs "f32" models in lower precision by default;
``precision="f32"`` pins ``INFERENCE_PRECISION_HINT`` so validation compares like with like, and
``precision="default"`` measures what a device team gets out of the box. The precision reported is read
back from the compiled model, not assumed.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgeship.targets.base import OpInfo, RuntimeSession

COMPUTE_OPS = {"Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"}


class OpenVINOSession(RuntimeSession):
    """Runs OpenVINO IR (``.xml`` + ``.bin``) on ``CPU`` with a fixed thread count and the latency hint."""

    name = "openvino"

    def _load(self) -> None:
        import openvino as ov

        self.core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if self.options.get("precision", "f32") == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        model = self.core.read_model(str(self.artifact.path))
        self.compiled = self.core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision_hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x}, share_inputs=True)
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def _op_report(self) -> list[OpInfo]:
        """Runtime precision of every executed layer, from the compiled model's execution graph."""
        counts: Counter[tuple[str, str]] = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            layer = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
            prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "unknown"
            if layer in ("Input", "Output", "Parameter", "Result", "Const"):
                continue
            counts[(layer, prec)] += 1
        return [OpInfo(op=op, precision=p, count=n, compute=op in COMPUTE_OPS) for (op, p), n in sorted(counts.items())]
