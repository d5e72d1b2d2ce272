"""Runtimes that execute artifacts. Registered explicitly; each module is imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

# target name -> (artifact format, "module:class"). Imported lazily so `edgeship --help` stays fast and a
# missing optional runtime fails with a clear message only when that runtime is asked for.
TARGETS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnx", "targets.onnxruntime:OnnxRuntimeTarget"),
    "litert": ("tflite", "targets.litert:LiteRTTarget"),
    "openvino": ("openvino", "targets.openvino:OpenVINOTarget"),
}

# The runtime that validates each export format by default.
DEFAULT_TARGET_FOR_FORMAT: dict[str, str] = {fmt: name for name, (fmt, _) in TARGETS.items()}


def get_target_class(name: str) -> Any:
    """Import and return the target class registered as ``name``."""
    from pipeline.errors import ConfigError, RuntimeUnavailableError

    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; valid targets: {', '.join(TARGETS)}")
    module, _, cls = TARGETS[name][1].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise RuntimeUnavailableError(f"target {name} needs a package that is not installed: {e}") from e
