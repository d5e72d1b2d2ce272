"""PyTorch -> TFLite with litert-torch (no TensorFlow needed)."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from exporters.artifact import Artifact, InputSpec
from exporters.base import ExportContext, example_input, finish_artifact, tail
from pipeline._io import atomic_path, captured_output
from pipeline.errors import ExportError, RuntimeUnavailableError


def export_tflite(model: Any, spec: InputSpec, ctx: ExportContext) -> Artifact:
    """Convert ``model`` to ``model.tflite`` with ``litert_torch.convert``; I/O stays float32 NCHW.

    The converted graph has the example input's static batch (litert-torch exports static shapes).
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
            edge = litert_torch.convert(model.eval(), (example_input(spec),))
            edge.export(str(tmp))
    except Exception as e:
        raise ExportError(f"TFLite export failed (litert_torch.convert): {type(e).__name__}: {e}\n"
                          f"converter log: {log}\n{tail(log)}") from e
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    ins, outs = interp.get_input_details(), interp.get_output_details()
    return finish_artifact(
        "tflite", path, [path], spec, int(ins[0]["shape"][0]), f"litert-torch {version('litert-torch')}", started,
        {"input_dtype": str(ins[0]["dtype"].__name__), "output_dtype": str(outs[0]["dtype"].__name__),
         "input_layout": "NCHW"},
        [i["name"] for i in ins], [o["name"] for o in outs],
    )
