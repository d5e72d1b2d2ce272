"""PyTorch -> ONNX with the dynamo exporter: one self-contained file, checked, named I/O."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from pydantic import Field

from edgeship.core.artifact import INPUT_NAME, OUTPUT_NAME, Artifact, InputSpec
from edgeship.core.errors import ExportError
from edgeship.core.graph import dynamic_batch_shapes, eval_mode, example_input
from edgeship.core.io import atomic_path, captured_output
from edgeship.core.validation import Strict
from edgeship.exporters.base import ExportContext, Format, check_free_space, converter_failed, finish_artifact
from edgeship.exporters.onnx_ops import onnx_ops
from edgeship.exporters.onnx_qdq import activations_to_uint8, fold_weight_qdq

TWO_GB = 2 * 1024**3


class OnnxOptions(Strict):
    """ONNX exporter options."""

    opset: int = Field(default=18, ge=18, le=23, description="ONNX opset (>= 18; quantized models use >= 21)")
    int4_weights: bool = Field(
        default=True, description="quantized models: store <=4-bit weights as INT4 (smallest file; onnxruntime and "
                                  "OpenVINO CPU run those layers in float) or in int8 containers (run as int8)")
    uint8_activations: bool = Field(
        default=True, description="quantized models: express activations as uint8 (zero point + 128, identical "
                                  "values); onnxruntime's fast x86 kernels are u8 x s8, int8 activations mostly "
                                  "fall back to float")


def strip_debug_metadata(proto: Any) -> None:
    """Drop torch.onnx's per-node stack traces and doc strings.

    They embed local file paths and can be a third of a small model's file.
    """
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]:
        del value.metadata_props[:]


def export_onnx(model: Any, spec: InputSpec, ctx: ExportContext, options: OnnxOptions) -> Artifact:
    """Export ``model`` to ``model.onnx`` (opset >= 18), run the checker and shape inference.

    ``torch.onnx.export(dynamo=True)`` writes weights to a side file by default; ``external_data=False``
    keeps one self-contained file, which is what a device team expects (models under 2 GB).
    The ``InputSpec`` is embedded as metadata so any consumer can preprocess exactly as the reference did.
    A quantized (PT2E) model is exported at opset >= 21 and its weight Q/DQ chains are folded into integer
    initializers (INT4 where the range fits); int8 activations are re-expressed as uint8 (same values), the
    layout onnxruntime's fast x86 kernels take. See ``onnx_qdq.py``.
    """
    import onnx
    import torch

    started = time.perf_counter()
    check_free_space(model, ctx, "ONNX")
    quantized = ctx.quantizer is not None
    dynamic_batch = ctx.dynamic_batch
    opset = max(options.opset, 21) if quantized else options.opset
    path = ctx.out_dir / "model.onnx"
    log = ctx.log_dir / "onnx.log"
    x = example_input(spec)
    dynamic_shapes = dynamic_batch_shapes(model) if dynamic_batch else None
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with atomic_path(path) as tmp, captured_output(log):
            program = torch.onnx.export(
                eval_mode(model), (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, external_data=params >= TWO_GB, dynamic_shapes=dynamic_shapes,
                optimize=True, verbose=False,
            )
            program.save(str(tmp), external_data=params >= TWO_GB)
            proto = onnx.load(str(tmp), load_external_data=False)
            folded = fold_weight_qdq(proto, int4=options.int4_weights) if quantized else {}
            if quantized and options.uint8_activations:
                folded["uint8_activation_zero_points"] = activations_to_uint8(proto)
            strip_debug_metadata(proto)
            meta = {p.key: p.value for p in proto.metadata_props}
            meta.update({"edgeship.input_spec": spec.to_json(), "edgeship.producer": "edgeship"})
            onnx.helper.set_model_props(proto, meta)
            onnx.save(proto, str(tmp))
            onnx.checker.check_model(str(tmp), full_check=True)
            onnx.shape_inference.infer_shapes_path(str(tmp), str(tmp.with_suffix(".shapes.onnx")), check_type=True)
            tmp.with_suffix(".shapes.onnx").unlink()
    except OSError:
        raise  # disk full, read-only folder: the environment (exit 2 naming the path), not the model
    except Exception as e:
        raise ExportError(converter_failed("ONNX export failed (torch.onnx dynamo exporter)", e, log)) from e
    proto = onnx.load(str(path), load_external_data=False)
    return finish_artifact(
        "onnx", path, [path], spec, -1 if dynamic_batch else spec.batch, f"torch.onnx {version('torch')}",
        started, {"opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                  "ir_version": proto.ir_version, "onnx": version("onnx"),
                  **({"weight_folding": folded} if quantized else {})},
        [i.name for i in proto.graph.input], [o.name for o in proto.graph.output],
    )


FORMAT = Format(name="onnx", suffix=".onnx", artifact="model.onnx", options=OnnxOptions, exporter=export_onnx,
                read_ops=onnx_ops, runtimes=("onnxruntime",))
