"""PyTorch -> TFLite with litert-torch (no TensorFlow needed)."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from pydantic import Field

from edgeship.core.artifact import Artifact, InputSpec
from edgeship.core.errors import ConfigError, ExportError, RuntimeUnavailableError
from edgeship.core.graph import eval_mode, example_input
from edgeship.core.io import atomic_path, captured_output
from edgeship.core.validation import Strict
from edgeship.exporters.base import ExportContext, Format, check_free_space, converter_failed, finish_artifact
from edgeship.exporters.tflite_io import postprocess
from edgeship.exporters.tflite_ops import tflite_ops


class TFLiteOptions(Strict):
    """TFLite exporter options."""

    int8_io: bool = Field(default=False, description="quantized models: keep int8 input/output tensors")
    uint8_io: bool = Field(default=False, description="pixel inputs (quantize.pixel_input, or a model without "
                                                      "normalisation): the input is raw uint8 pixels 0..255 (scale "
                                                      "1/255, zero point 0), as a camera pipeline hands them")


def export_tflite(model: Any, spec: InputSpec, ctx: ExportContext, options: TFLiteOptions) -> Artifact:
    """Convert ``model`` to ``model.tflite`` with ``litert_torch.convert``; I/O is float32 NCHW.

    The converted graph has the example input's static batch (litert-torch exports static shapes). A PT2E
    model is lowered to a full-integer model with ``QuantConfig(pt2e_quantizer=...)``; litert-torch gives it
    int8 I/O, which is kept with ``int8_io`` option and otherwise wrapped in QUANTIZE/DEQUANTIZE boundary ops. A float
    model's BatchNorms that no convolution precedes are converted as depthwise 1x1 convolutions.
    """
    started = time.perf_counter()
    if options.uint8_io and (any(spec.mean) or any(s != 1 for s in spec.std)):
        raise ConfigError("export.tflite.uint8_io: the model's input is normalised (mean/std); raw uint8 pixels need "
                          "a model that takes [0, 1] pixels: set quantize.pixel_input: true")
    if options.uint8_io and options.int8_io:
        raise ConfigError("export.tflite: uint8_io and int8_io both set; choose one input type")
    check_free_space(model, ctx, "TFLite")
    path = ctx.out_dir / "model.tflite"
    log = ctx.log_dir / "tflite.log"
    with captured_output(log):  # importing litert-torch already prints torch/absl warnings
        try:
            import litert_torch
        except ImportError as e:
            raise RuntimeUnavailableError(f"TFLite export needs litert-torch (pip install litert-torch): {e}") from e
    try:
        with atomic_path(path) as tmp, captured_output(log):
            kwargs, depthwise = {}, []
            model = eval_mode(model)  # before the float rewrite: its exported graph refuses .eval()
            if ctx.quantizer is not None:
                from litert_torch.quantize.quant_config import QuantConfig

                kwargs["quant_config"] = QuantConfig(pt2e_quantizer=ctx.quantizer)
            else:
                model, depthwise = _standalone_batch_norms_as_depthwise(model, spec)
            edge = litert_torch.convert(model, (example_input(spec),), **kwargs)
            edge.export(str(tmp))
            io_change: dict[str, Any] = {}
            if ctx.quantizer is not None or options.uint8_io:
                data, io_change = postprocess(tmp.read_bytes(), float_boundary=ctx.quantizer is not None
                                              and not options.int8_io, uint8_pixels=options.uint8_io)
                tmp.write_bytes(data)
    except OSError:
        raise  # disk full, read-only folder: the environment (exit 2 naming the path), not the model
    except Exception as e:
        raise ExportError(converter_failed("TFLite export failed (litert_torch.convert)", e, log)) from e
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    ins, outs = interp.get_input_details(), interp.get_output_details()
    return finish_artifact(
        "tflite", path, [path], spec, int(ins[0]["shape"][0]), f"litert-torch {version('litert-torch')}", started,
        {"input_dtype": str(ins[0]["dtype"].__name__), "output_dtype": str(outs[0]["dtype"].__name__),
         "input_layout": "NCHW", "full_integer": ctx.quantizer is not None,
         **({"batch_norms_as_depthwise": depthwise} if depthwise else {}),
         **({"postprocess": io_change} if io_change else {})},
        [i["name"] for i in ins], [o["name"] for o in outs],
    )


def _standalone_batch_norms_as_depthwise(model: Any, spec: InputSpec) -> tuple[Any, list[str]]:
    """``model``, or its exported graph with each BatchNorm no convolution precedes as a depthwise 1x1 conv.

    litert-torch folds a BatchNorm into the convolution before it and lowers any other to float SUB/MUL/MUL/ADD
    (5 SUBs in archified convnext_tiny at fp32, an op the int8-npu profile lacks); in eval mode a BatchNorm is
    exactly that per-channel affine map, which one DEPTHWISE_CONV_2D carries.
    """
    import torch

    if not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        return model, []
    from edgeship.core.standalone_bn import standalone_batch_norms_to_depthwise

    graph = torch.export.export(model, (example_input(spec),)).module()
    replaced = standalone_batch_norms_to_depthwise(graph)
    return (graph, replaced) if replaced else (model, [])


FORMAT = Format(name="tflite", suffix=".tflite", artifact="model.tflite", options=TFLiteOptions,
                exporter=export_tflite, read_ops=tflite_ops, runtimes=("litert",))
