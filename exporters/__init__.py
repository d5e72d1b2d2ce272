"""Exporters: one module per format, each turning the final model into an ``Artifact`` on disk."""

from __future__ import annotations

import importlib
from typing import Any

# format -> "module:function". Order matters: OpenVINO may start from the ONNX file when tracing fails.
EXPORTERS: dict[str, str] = {
    "onnx": "exporters.onnx:export_onnx",
    "tflite": "exporters.tflite:export_tflite",
    "openvino": "exporters.openvino:export_openvino",
}


def get_exporter(fmt: str) -> Any:
    """Import and return the export function for ``fmt``."""
    from pipeline.errors import ConfigError

    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown export format {fmt!r}; valid formats: {', '.join(EXPORTERS)}")
    module, _, fn = EXPORTERS[fmt].partition(":")
    return getattr(importlib.import_module(module), fn)
