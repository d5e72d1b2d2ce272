"""Per-op hot spots: a runtime's own op profile (from the device runner) as a table a user can act on.

Each op gets the PyTorch module it came from where the names survive the converter: onnxruntime's node names
lead back to the ONNX graph, whose weights carry the parameters' names; an OpenVINO IR converted from that ONNX
file keeps its node and tensor names; LiteRT's tensors carry litert-torch's module paths. Where none survives
(an IR converted from torch.export, whose convolutions BatchNorm folding renamed; an op without weights) the
module is left empty, never guessed. ``coverage`` (the ops' sum over the end-to-end p50) says how much of
the latency the table explains.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from edgeship.core.artifact import Artifact
from edgeship.targets.litert import COMPUTE_OPS as LITERT_COMPUTE
from edgeship.targets.litert import kernel_precision
from edgeship.targets.onnxruntime import FLOAT_KERNELS, INTEGER_KERNELS
from edgeship.targets.openvino import COMPUTE_OPS as OPENVINO_COMPUTE

TOP = 10  # ops a report table shows per row (report.json keeps them all)
# Suffixes onnxruntime's graph transformers add to the node they rewrite (NCHWc layout, QDQ fusion, ...).
ORT_SUFFIX = re.compile(r"(_nchwc|_token_\d+|_quant|_output_\d+|/duplicated)+$")
COMPUTE_TYPES = FLOAT_KERNELS | INTEGER_KERNELS | LITERT_COMPUTE | OPENVINO_COMPUTE
PRECISION_WORDS = {"i8": "int8", "u8": "int8", "int8": "int8", "f32": "float32", "fp32": "float32",
                   "bf16": "bfloat16", "f16": "float16", "fp16": "float16", "i32": "int32"}


def hot_spots(runtime: str, artifact: Artifact, profile: dict[str, Any], p50: float | None) -> dict[str, Any]:
    """The op profile of one row: every op (slowest first) with module, precision and share, and the coverage."""
    if "error" in profile:
        return {"error": profile["error"]}
    names = module_index(artifact)
    ops = []
    for op in profile["ops"]:
        if op["ms"] is None:
            continue  # listed under not_timed
        ops.append({"name": op["name"], "module": _module(runtime, op, names, artifact), "type": op["type"],
                    "precision": _precision(runtime, op), "ms": round(op["ms"], 5)})
    ops.sort(key=lambda o: -o["ms"])
    total = sum(o["ms"] for o in ops)
    for o in ops:
        o["share"] = round(o["ms"] / p50, 4) if p50 else None
    not_timed = [{"name": o["name"], "type": o["type"], "error": o.get("error")} for o in profile["ops"]
                 if o["ms"] is None]
    return {"ops": ops, "total_ms": round(total, 4), "coverage": round(total / p50, 3) if p50 else None,
            "profiled_runs": profile.get("runs"), "seconds": profile.get("seconds"), "method": METHODS[runtime],
            **({"not_timed": not_timed} if not_timed else {})}


METHODS = {"onnxruntime": "onnxruntime session profiling (kernel time per node)",
           "openvino": "OpenVINO performance counters (real time per executed node)",
           "litert": "each op cut out into a model of its own and timed alone on LiteRT (the Python "
                     "interpreter has no op profiler)"}


def _precision(runtime: str, op: dict[str, Any]) -> str:
    if runtime == "onnxruntime":
        return "int8" if op["type"] in INTEGER_KERNELS else ("float32" if op["type"] in FLOAT_KERNELS else "—")
    if runtime == "openvino":
        word = op.get("exec_type", "").rsplit("_", 1)[-1].lower()
        return PRECISION_WORDS.get(word, "—")
    if "inputs" not in op:  # benchmark_model's table (adb) names no tensor types
        return "—"
    return kernel_precision(op["type"], op["inputs"], op["outputs"])


def _module(runtime: str, op: dict[str, Any], names: dict[str, tuple[str, bool]], artifact: Artifact) -> str | None:
    compute = op["type"] in COMPUTE_TYPES
    if runtime == "litert":
        return litert_module(op["name"], compute)
    keys = [op["name"], ORT_SUFFIX.sub("", op["name"])]
    if runtime == "openvino":
        keys += openvino_tensor_names(str(artifact.path)).get(op["name"], [])
    # A name found only through its producer's weights (an activation) names a module only for a fused kernel.
    found = [names[k] for k in keys if k in names and (names[k][1] or compute)]
    return found[0][0] if found else None


def litert_module(tensor: str, compute: bool) -> str | None:
    """``layer1.0.conv1`` from litert-torch's location name (``…Sequential_layer1/…BasicBlock_0/…Conv2d_conv1;1``).

    A fused op's name lists every module fused into it (``;``-separated); a compute op is named by its
    convolution or linear layer, any other op by the first module listed.
    """
    paths = []
    for part in tensor.split(";"):
        steps = [s.split(".")[-1] for s in part.split("/")[1:]]  # the first step is the model's own class
        attrs = [s.split("_", 1)[1] for s in steps if "_" in s]
        if attrs and len(attrs) == len(steps):
            paths.append((steps[-1].split("_", 1)[0], ".".join(attrs)))
    if not paths:
        return None
    if compute:
        return next((p for cls, p in paths if cls.startswith(("Conv", "Linear"))), paths[0][1])
    return paths[0][1]


def module_index(artifact: Artifact) -> dict[str, tuple[str, bool]]:
    """Names in the ONNX graph ``artifact`` is or was converted from -> (PyTorch module, whether its own weights).

    Empty for an IR converted from torch.export: OpenVINO numbers that graph's tensors its own way, and a name
    matched across two graphs could point at the wrong layer.
    """
    if artifact.format == "onnx":
        return _onnx_index(str(artifact.path))
    source = artifact.path.parent.parent / "model.onnx"
    if artifact.details.get("converted_from") == "onnx" and source.is_file():
        return _onnx_index(str(source))
    return {}


@lru_cache(maxsize=8)
def _onnx_index(path: str) -> dict[str, tuple[str, bool]]:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}

    def weight_of(node: Any, depth: int = 0) -> str | None:
        # A weight reaches its layer directly or through DequantizeLinear (QDQ); a fused activation's kernel
        # is named after the activation, so an op without weights looks one producer up.
        for name in node.input:
            if name in weights and re.search(r"\.weight", name):
                return re.sub(r"\.weight.*$", "", name)
            src = producer.get(name)
            if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in weights:
                return re.sub(r"\.weight.*$", "", src.input[0])
        if depth < 2 and node.op_type in ("Relu", "Clip", "Add", "Sigmoid", "HardSwish") and node.input:
            src = producer.get(node.input[0])
            return weight_of(src, depth + 1) if src is not None else None
        return None

    index = {}
    for node in graph.node:
        module = weight_of(node)
        if module:
            entry = (module, weight_of(node, depth=2) is not None)  # depth 2: its own weights only
            index.update({node.name: entry, **{out: entry for out in node.output}})
    return index


@lru_cache(maxsize=8)
def openvino_tensor_names(xml: str) -> dict[str, list[str]]:
    """OpenVINO node friendly name -> the tensor names of its outputs (the names it was converted from)."""
    import openvino as ov

    return {op.get_friendly_name(): [n.split(":")[0] for out in op.outputs() for n in out.get_names()]
            for op in ov.Core().read_model(xml).get_ordered_ops()}
