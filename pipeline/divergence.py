"""Layer-wise divergence: each runtime's intermediate tensors against the PyTorch reference's, matched to modules.

The reference is the run's final PyTorch model as a ``torch.fx`` graph (the PT2E graph when quantized, else
``torch.export`` of the model); every node's output is recorded. Each runtime exposes its own intermediates:
ONNX gets extra graph outputs, TFLite's interpreter keeps every tensor (``experimental_preserve_all_tensors``),
OpenVINO gets extra outputs. A runtime tensor is matched to the reference by name (the ONNX exporter keeps
the graph's node names, OpenVINO keeps ONNX tensor names) or, for TFLite's names (``.../BasicBlock_1/
Conv2d_conv1``), by the module path they spell and the shape. Where a quantized reference requantizes a
module's output, the dequantized value (what an integer kernel holds) is the one compared. Per layer: SQNR and
cosine; the first layer below ``min_sqnr_db`` is where that runtime starts to compute something else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.core.artifact import Artifact

TFLITE_SCOPE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z][A-Za-z0-9]*_(.+)$")  # "torch.nn.modules.conv.Conv2d_conv1"


@dataclass
class RefTensor:
    """One reference node's output: its graph name, module path, position and value (NCHW)."""

    name: str
    module: str
    position: int
    op: str
    value: np.ndarray
    users: tuple[str, ...] = ()  # the nearest recorded tensors computed from it (the data flow, downstream)


def reference_graph(model: Any, x: np.ndarray) -> Any:
    """``model`` as the fx graph the tables walk: a PT2E model as it is, any other ``torch.export``-ed on ``x``."""
    import torch
    from torch.fx import GraphModule

    if isinstance(model, GraphModule):
        return model
    # Decomposed as the ONNX exporter decomposes it, so node names match the artifact's tensor names
    # ("_native_batch_norm_legit_no_training", "getitem"); a PT2E model already is such a graph.
    return torch.export.export(model, (torch.from_numpy(np.ascontiguousarray(x)),)).run_decompositions().module()


def reference_tensors(model: Any, x: np.ndarray) -> list[RefTensor]:
    """Every tensor-valued node output of ``model`` (``reference_graph`` of it) on ``x``."""
    import torch
    from torch.fx import Interpreter

    from edgeship.core.graph import node_module

    inp = torch.from_numpy(np.ascontiguousarray(x))
    gm = reference_graph(model, x)
    values: dict[str, Any] = {}

    class Recorder(Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.op == "call_function" and isinstance(out, torch.Tensor) and out.is_floating_point():
                values[n.name] = out.detach().numpy().copy()
            return out

    with torch.no_grad():
        Recorder(gm).run(inp)
    tensors, position = [], 0
    for node in gm.graph.nodes:
        if node.name not in values:
            continue
        module = node_module(node) or _producer_module(node) or ""
        tensors.append(RefTensor(node.name, module, position, _op(str(node.target)), values[node.name],
                                 _recorded_users(node, values)))
        position += 1
    return tensors


def reference_floor(model: Any, x: np.ndarray, refs: list[RefTensor]) -> dict[str, float]:
    """Per reference tensor, the SQNR of the reference against itself with its input × (1 + 1e-6·N(0, 1)).

    ``model``: the ``reference_graph`` that gave ``refs`` (a float model would be exported again).

    A one-level rounding flip in a quantized network grows with depth: inception_v3 at W8A8 against itself, after
    this perturbation, is at 17.8 dB at the first layer where every runtime fell under 20 dB (16-18 dB there). A
    runtime well under the floor computes something else; one near it rounds differently.
    """
    from edgeship.metrics import rounding_perturbed

    again = {r.name: r.value for r in reference_tensors(model, rounding_perturbed(x, 0))}
    return {r.name: round(sqnr(r.value, again[r.name]), 2) for r in refs if r.name in again}


def _nearest(start: Any, found: Callable[[Any], bool], users: Callable[[Any], Any]) -> list[Any]:
    """The nearest items downstream of ``start`` (an iterable of users) for which ``found`` holds."""
    hits, stack, seen = [], list(start), set()
    while stack:
        item = stack.pop()
        if item in seen:
            continue
        seen.add(item)
        if found(item):
            hits.append(item)
        else:
            stack.extend(users(item))
    return hits


def _recorded_users(node: Any, recorded: dict[str, Any]) -> tuple[str, ...]:
    """The nearest nodes downstream of ``node`` that have a recorded tensor (through integer quantize nodes)."""
    return tuple(u.name for u in _nearest(node.users, lambda u: u.name in recorded, lambda u: u.users))


def _producer_module(node: Any) -> str | None:
    """A quantize/dequantize node's module: the module whose output it requantizes."""
    from edgeship.core.graph import node_module

    seen = 0
    while node is not None and seen < 4 and _op(str(node.target)).startswith(("quantize_per", "dequantize_per")):
        node = node.args[0] if node.args and hasattr(node.args[0], "meta") else None
        seen += 1
        if node is not None and node_module(node):
            return node_module(node)
    return None


def _op(target: str) -> str:
    """``aten.conv2d.default`` -> ``conv2d``; a node name ``quantize_per_tensor_3`` -> ``quantize_per_tensor``."""
    parts = target.split(".")
    name = parts[-2] if len(parts) >= 3 else parts[-1]
    return re.sub(r"_\d+$", "", name)


def runtime_tensors(runtime: str, artifact: Artifact, x: np.ndarray, wanted: set[str],
                    work_dir: Path) -> dict[str, np.ndarray]:
    """Intermediate tensors of ``artifact`` on ``runtime`` (NCHW floats), by the runtime's tensor name."""
    name = runtime.partition("@")[0]
    if name == "onnxruntime":
        return _onnx_tensors(artifact.path, x, wanted, work_dir)
    if name == "litert":
        return _tflite_tensors(artifact.path, x)
    if name == "openvino":
        return _openvino_tensors(artifact.path, x, wanted, runtime.endswith("@default"))
    return {}


def _onnx_tensors(path: Path, x: np.ndarray, wanted: set[str], work_dir: Path) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    present = {o for n in proto.graph.node for o in n.output} & wanted
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in sorted(present - have))
    debug = work_dir / "debug.onnx"
    onnx.save(proto, str(debug))
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor as named
        sess = ort.InferenceSession(str(debug), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        per_sample = [dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1]}), strict=True))
                      for i in range(len(x))]
    finally:
        debug.unlink(missing_ok=True)
    return _stacked([{n: v for n, v in s.items() if np.issubdtype(v.dtype, np.floating)} for s in per_sample])


def _tflite_tensors(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    details = [d for d in interp.get_tensor_details() if len(d["shape"]) and d["shape"][0] == inp["shape"][0]]
    per_sample: list[dict[str, np.ndarray]] = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i:i + 1].astype(inp["dtype"]))
        interp.invoke()
        got = {}
        for d in details:
            try:
                v = interp.get_tensor(d["index"])
            except ValueError:  # a tensor the interpreter did not keep
                continue
            scale, zero = d["quantization"]
            v = (v.astype(np.float32) - zero) * scale if scale else v.astype(np.float32)
            got[f"{d['index']}:{d['name']}"] = np.transpose(v, (0, 3, 1, 2)) if v.ndim == 4 else v
        per_sample.append(got)
    return _stacked(per_sample)


def _openvino_tensors(path: Path, x: np.ndarray, wanted: set[str], default_precision: bool) -> dict[str, np.ndarray]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    outputs = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Parameter", "Result", "Constant"):
            continue
        for out in op.outputs():
            # Tensor names OpenVINO kept from the ONNX graph or the exported program ("relu_1:0"), or
            # TFLite scope names from a .tflite file.
            names = {n.removesuffix(":0") for n in out.get_names()}
            hit = names & wanted or {n for n in names if tflite_module(n)}
            if hit:
                outputs[sorted(hit)[0]] = out
    if outputs:
        model.add_outputs(list(outputs.values()))
    config = {} if default_precision else {"INFERENCE_PRECISION_HINT": "f32"}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    compiled_outputs = request.model_outputs
    per_sample = []
    for i in range(len(x)):
        request.infer({0: x[i:i + 1]})
        got = {}
        for port in compiled_outputs:
            hit = {n.removesuffix(":0") for n in port.get_names()} & set(outputs)
            if hit:
                got[sorted(hit)[0]] = np.array(request.get_tensor(port).data, dtype=np.float32, copy=True)
        per_sample.append(got)
    return _stacked(per_sample)


def _stacked(per_sample: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One float32 array per tensor name from the per-sample dicts (runtimes here run one sample at a time)."""
    if not per_sample:
        return {}
    # A 0-d tensor (a scale, a shape) is no activation of the sample and cannot be stacked.
    return {k: np.concatenate([s[k] for s in per_sample]).astype(np.float32) for k in per_sample[0]
            if np.ndim(per_sample[0][k]) > 0}


def tflite_module(name: str) -> str | None:
    """The module path a TFLite tensor name spells (its first scope): ``.../BasicBlock_1/Conv2d_conv1`` -> 1.conv1."""
    first = name.split(":", 1)[-1].split(";")[0]
    parts = first.split("/")[1:]  # the first component is the root module
    attrs = [m.group(1) for m in (TFLITE_SCOPE.match(p) for p in parts) if m]
    return ".".join(attrs) if attrs and len(attrs) == len(parts) else None


def sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    """``edgeship.metrics.sqnr_db`` bounded to ±200 dB (200 when equal), so a table row always has a number."""
    from edgeship.metrics import sqnr_db

    value = sqnr_db(out, ref)
    return 200.0 if value is None else max(-200.0, min(200.0, value))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors (1 when both are zero)."""
    a, b = ref.ravel().astype(np.float64), out.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 1.0 if na == nb == 0 else (0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb)))


def divergence_table(refs: list[RefTensor], tensors: dict[str, np.ndarray], min_sqnr_db: float,
                     floor: dict[str, float] | None = None) -> dict[str, Any]:
    """Per matched layer SQNR and cosine in reference order, the first layer below ``min_sqnr_db``, the steepest drop.

    Error accumulates with depth, so the first layer under the threshold can sit blocks after the one that broke:
    mobilenet_v2 W8A8 on OpenVINO fell 9 dB at features.7.conv.2 and crossed 20 dB only at features.8.conv.1.0.
    ``steepest_drop`` is the layer whose SQNR falls most below the layer before it (``drop_db``). With ``floor``
    (``reference_floor``) every row also carries ``floor_db``, the reference's own SQNR under a rounding-sized
    perturbation at that layer.
    """
    # Quantize nodes hold integers in float clothing; their dequantize (attributed to the module it requantizes, see
    # _producer_module) is what an integer runtime's tensor equals, and the best match below picks it.
    by_name = {r.name: r for r in refs if _op(r.name) not in ("quantize_per_tensor", "quantize_per_channel")}
    by_module: dict[str, list[RefTensor]] = {}
    for r in by_name.values():
        by_module.setdefault(r.module, []).append(r)
    rows: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        ref = by_name.get(key)
        module = tflite_module(key)
        # A TFLite scope name's 4-d tensor is tried in both layouts: LiteRT's come NHWC -> NCHW, which is wrong for
        # one that was never an image (attention's [B, heads, N, d]), and OpenVINO reading the .tflite gives NHWC.
        layouts = ([value, np.transpose(value, (0, 2, 3, 1)), np.transpose(value, (0, 3, 1, 2))]
                   if module and value.ndim == 4 else [value])
        pairs = [(ref, value)] if ref is not None and ref.value.shape == value.shape else [
            (r, v) for r in by_module.get(module or "\0", []) for v in layouts if r.value.shape == v.shape]
        if not pairs:
            continue
        best, value = max(pairs, key=lambda p: sqnr(p[0].value, p[1]))
        row = {"layer": best.module or best.name, "node": best.name, "op": best.op, "position": best.position,
               "tensor": key.split(":", 1)[-1].split(";")[0][-120:], "sqnr_db": round(sqnr(best.value, value), 2),
               "cosine": round(cosine(best.value, value), 6),
               **({"floor_db": floor[best.name]} if floor and best.name in floor else {})}
        if best.name not in rows or row["sqnr_db"] > rows[best.name]["sqnr_db"]:
            rows[best.name] = row
    ordered = sorted(rows.values(), key=lambda r: r["position"])
    recovered = recovered_rows(rows, {r.name: r.users for r in refs}, min_sqnr_db)
    for name in recovered:
        rows[name]["recovered"] = True
    kept = [r for r in ordered if not r.get("recovered")]
    first = next((r for r in kept if r["sqnr_db"] < min_sqnr_db), None)
    return {"layers": ordered, "matched": len(ordered), "min_sqnr_db": min_sqnr_db, "first_divergent": first,
            "steepest_drop": steepest_drop(kept),
            "recovered": [r["layer"] for r in ordered if r.get("recovered")]}


# How far above a low row its readers must be for the low row to count as a mismatch: error that hovers around the
# threshold (inception's 18 dB conv, 20.5 dB after its ReLU) is the network's own, not a wrong match.
RECOVERY_DB = 10.0


def recovered_rows(rows: dict[str, dict[str, Any]], users: dict[str, tuple[str, ...]],
                   min_sqnr_db: float) -> set[str]:
    """Rows under the threshold whose every downstream row is right again (or recovered): not where a runtime broke.

    Right again: at or above the threshold and ``RECOVERY_DB`` above the low row. Downstream follows the reference
    graph's data flow to the nearest rows (through nodes with none). A runtime that computes something else stays
    wrong on the way to the output. What recovers is a tensor matched to the wrong reference: an ONNX name the
    exporter gave another node (swin_t's ``mul_1``: cosine 0.0 between two exact layers), or a lowering's
    intermediate under the module's name (TFLite's hardsigmoid keeps relu6(x + 3) before the 1/6; its
    shifted-window attention the tensor before the reverse roll). A real break in a branch (inception's stride-2
    convs) reaches the concatenation and stays.
    """
    recovered: set[str] = set()
    for name in sorted(rows, key=lambda n: rows[n]["position"], reverse=True):  # users sit later in the graph
        after = _nearest(users.get(name, ()), lambda n: n in rows, lambda n: users.get(n, ()))
        low = rows[name]["sqnr_db"]
        if low < min_sqnr_db and after and all(
                a in recovered or rows[a]["sqnr_db"] >= max(min_sqnr_db, low + RECOVERY_DB) for a in after):
            recovered.add(name)
    return recovered


# SQNR above this is agreement to within rounding on an 8-bit grid (full-scale 8-bit noise is about 50 dB): a fall
# from an exact match (140 dB in float) to one-level rounding differences is not where a runtime broke.
EXACT_DB = 50.0


def steepest_drop(ordered: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row whose SQNR falls most below its predecessor's (with ``drop_db``); None without a fall.

    Both SQNRs are capped at ``EXACT_DB`` first, so only a fall below rounding-level agreement counts.
    """
    capped = [min(r["sqnr_db"], EXACT_DB) for r in ordered]
    drops = [(prev - cur, row) for prev, cur, row in zip(capped, capped[1:], ordered[1:], strict=False)]
    drop, row = max(drops, key=lambda d: d[0], default=(0.0, None))
    return None if row is None or drop <= 0 else {**row, "drop_db": round(drop, 2)}
