"""Facts about the machine and library versions, recorded in every report and manifest."""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("edgeship", "torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnxscript", "openvino",
            "litert-torch", "ai-edge-litert", "torchao", "torch-pruning", "pydantic")


@cache
def library_versions() -> dict[str, str]:
    """Installed version of each library edgeship's results depend on ("missing" if absent)."""
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "missing"
    return out


@cache
def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, str | int]:
    """CPU, core count, OS and Python version."""
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count() or 0, "platform": platform.platform(),
            "python": platform.python_version()}
