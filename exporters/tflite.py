"""PyTorch -> TFLite with litert-torch (no TensorFlow needed)."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from exporters.artifact import Artifact, InputSpec
from exporters.base import ExportContext, eval_mode, example_input, finish_artifact, tail
from exporters.tflite_io import postprocess
from pipeline._io import atomic_path, captured_output
from pipeline.errors import ExportError, RuntimeUnavailableError


def export_tflite(model: Any, spec: InputSpec, ctx: ExportContext, int8_io: bool = False) -> Artifact:
    """Convert ``model`` to ``model.tflite`` with ``litert_torch.convert``; I/O is float32 NCHW.

    The converted graph has the example input's static batch (litert-torch exports static shapes). A PT2E
    model is lowered to a full-integer model with ``QuantConfig(pt2e_quantizer=...)``; litert-torch gives it
    int8 I/O, which is kept with ``int8_io`` and otherwise wrapped in QUANTIZE/DEQUANTIZE boundary ops.
    """
    started = time.perf_counter()
    path = ctx.out_dir / "model.tflite"
    log = ctx.log_dir / "tflite.log"
    with captured_output(log):  # importing litert-torch already prints torch/absl warnings
        try:
            import litert_torch
        except ImportError as e:
            raise RuntimeUnavailableError(f"TFLite export needs litert-torch (pip install litert-torch): {e}") from e
    try:
        with atomic_path(path) as tmp, captured_output(log):
            kwargs = {}
            if ctx.quantizer is not None:
                from litert_torch.quantize.quant_config import QuantConfig

                kwargs["quant_config"] = QuantConfig(pt2e_quantizer=ctx.quantizer)
            edge = litert_torch.convert(eval_mode(model), (example_input(spec),), **kwargs)
            edge.export(str(tmp))
            io_change: dict[str, Any] = {}
            if ctx.quantizer is not None:
                data, io_change = postprocess(tmp.read_bytes(), float_boundary=not int8_io)
                tmp.write_bytes(data)
    except Exception as e:
        raise ExportError(f"TFLite export failed (litert_torch.convert): {type(e).__name__}: {e}\n"
                          f"converter log: {log}\n{tail(log)}") from e
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    ins, outs = interp.get_input_details(), interp.get_output_details()
    return finish_artifact(
        "tflite", path, [path], spec, int(ins[0]["shape"][0]), f"litert-torch {version('litert-torch')}", started,
        {"input_dtype": str(ins[0]["dtype"].__name__), "output_dtype": str(outs[0]["dtype"].__name__),
         "input_layout": "NCHW", "full_integer": ctx.quantizer is not None,
         **({"postprocess": io_change} if io_change else {})},
        [i["name"] for i in ins], [o["name"] for o in outs],
    )
