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


# The instruction-set flags int8 and bf16 speed on a CPU depend on (VNNI/AMX: int8 dot products; avx512_bf16/AMX:
# OpenVINO's default bf16 inference).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


@cache
def cpu_flags() -> frozenset[str]:
    """Every flag /proc/cpuinfo lists for this CPU (empty where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[-1].split())


def host_info() -> dict[str, str | int]:
    """CPU, its speed-relevant instruction-set flags, core count, OS and Python version."""
    return {"cpu": cpu_model(), "cpu_flags": " ".join(f for f in SPEED_FLAGS if f in cpu_flags()),
            "logical_cores": os.cpu_count() or 0, "platform": platform.platform(),
            "python": platform.python_version()}
