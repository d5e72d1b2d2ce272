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
# The model's own compute ops (before the plugin fuses them into FullyConnected, Subgraph or
# ScaledDotProductAttention nodes): what the precision summary counts.
MODEL_COMPUTE_OPS = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData",
                     "GroupConvolutionBackpropData"}


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
        self.model_ops = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
        self.compiled = self.core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision_hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x}, share_inputs=True)
        return np.array(self.request.get_output_tensor(0).data, copy=True)

    def _op_report(self) -> list[OpInfo]:
        """Runtime precision of every executed layer, from the compiled model's execution graph.

        Compute is counted on the model's own convolutions and matmuls, each at the precision of the executed node
        that holds it (``originalLayersNames``): the plugin fuses matmuls into ``Subgraph`` and
        ``ScaledDotProductAttention`` nodes, which a count of executed node types misses (measured: vit_b_32 read
        "int8 50/50" while onnxruntime and LiteRT showed 50 of 74 matmuls in int8). A compute op found in no
        executed node is reported as ``unknown``.
        """
        counts: Counter[tuple[str, str, bool]] = Counter()
        placed: set[str] = set()
        unnamed = 0
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            layer = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
            prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "unknown"
            if layer in ("Input", "Output", "Parameter", "Result", "Const"):
                continue
            names = rt["originalLayersNames"].astype(str).split(",") if "originalLayersNames" in rt else []
            held = [n for n in names if self.model_ops.get(n) in MODEL_COMPUTE_OPS and n not in placed]
            placed.update(held)
            for name in held:
                kind = self.model_ops[name]
                counts[(kind if kind == layer else f"{kind} in {layer}", prec, True)] += 1
            if not held:
                # A compute node whose names did not survive (a renamed Gemm) is still one of the model's ops.
                counts[(layer, prec, layer in COMPUTE_OPS)] += 1
                unnamed += layer in COMPUTE_OPS
        missing = [n for n, t in self.model_ops.items() if t in MODEL_COMPUTE_OPS and n not in placed][unnamed:]
        for name in missing:
            counts[(f"{self.model_ops[name]} (not found after fusion)", "unknown", True)] += 1
        return [OpInfo(op=op, precision=p, count=n, compute=c) for (op, p, c), n in sorted(counts.items())]
