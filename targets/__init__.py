"""Runtimes, registered explicitly: each entry is a ``Runtime`` record (targets/base.py).

Adding a runtime is a new module with a ``RuntimeSession`` subclass plus one entry here. A runtime may read
several formats (OpenVINO reads its IR, ``.onnx`` and ``.tflite``); which runtimes validate each format is the
recipe's ``validate.runtimes`` (default: each format's ``runtimes``). Sessions are imported only when used, so
``edgeship --help`` stays fast and a missing optional runtime fails with a clear message only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeship.core.artifact import Artifact
from edgeship.targets.base import Runtime, RuntimeSession, Variant

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("onnxruntime", formats=("onnx",), session="edgeship.targets.onnxruntime:OnnxRuntimeSession",
            library="onnxruntime"),
    Runtime("litert", formats=("tflite",), session="edgeship.targets.litert:LiteRTSession",
            library="ai-edge-litert"),
    # Validated pinned to f32: on AVX512-BF16/AMX CPUs the CPU plugin runs "f32" models in bf16 by default.
    Runtime("openvino", formats=("openvino", "onnx", "tflite"), session="edgeship.targets.openvino:OpenVINOSession",
            library="openvino", options={"precision": "f32"},
            variants={"default": Variant(options={"precision": "default"}, gated=False,
                                         why="what a device team gets out of the box (bf16 on AVX512-BF16/AMX "
                                             "CPUs): reported, not gated")}),
)}


def parse_runtime(spec: str) -> tuple[Runtime, str | None]:
    """(runtime, variant name or None) of ``name`` or ``name@variant``; unknown names raise ``ConfigError``."""
    from edgeship.core.errors import ConfigError

    name, _, variant = spec.partition("@")
    if name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; valid runtimes: {', '.join(RUNTIMES)}")
    runtime = RUNTIMES[name]
    if variant and variant not in runtime.variants:
        valid = ", ".join(f"{name}@{v}" for v in runtime.variants) or "none"
        raise ConfigError(f"unknown runtime variant {spec!r}; variants of {name}: {valid}")
    return runtime, variant or None


def open_session(spec: str, artifact: Artifact, threads: int) -> tuple[RuntimeSession, bool]:
    """A session of runtime ``spec`` (``name[@variant]``) on ``artifact`` (not yet loaded), and whether it is gated."""
    from edgeship.core.errors import ConfigError, RuntimeUnavailableError

    runtime, variant = parse_runtime(spec)
    if artifact.format not in runtime.formats:
        raise ConfigError(f"runtime {runtime.name} reads {', '.join(runtime.formats)} artifacts, "
                          f"not {artifact.format}")
    module, _, cls = runtime.session.partition(":")
    try:
        session_cls: Any = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise RuntimeUnavailableError(f"runtime {runtime.name} needs a package that is not installed: {e}") from e
    options, gated = runtime_options(spec)
    return session_cls(artifact, threads=threads, **options), gated


def runtime_options(spec: str) -> tuple[dict[str, Any], bool]:
    """The session options of ``name[@variant]`` (the variant's over the runtime's), and whether its row is gated."""
    runtime, variant = parse_runtime(spec)
    chosen = runtime.variants[variant] if variant else None
    return {**runtime.options, **(chosen.options if chosen else {})}, chosen.gated if chosen else True
