"""Pieces every exporter uses: quiet converters, the example input, and building the ``Artifact`` record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters.artifact import Artifact, InputSpec
from pipeline._io import sha256_file


@dataclass
class ExportContext:
    """Where an exporter writes, and what it may reuse from exporters that ran before it."""

    out_dir: Path  # the run's artifacts/ directory
    log_dir: Path  # converter logs land here (one file per format)
    onnx_path: Path | None = None  # set once the ONNX exporter has succeeded (OpenVINO may start from it)
    quantizer: Any = None  # the PT2E quantizer when the model is a converted PT2E graph


def eval_mode(model: Any) -> Any:
    """Put ``model`` in eval mode and return it.

    PT2E graphs' patched ``eval()`` rewrites their dropout/BN ops but returns None and leaves ``training`` set,
    which converters read.
    """
    model.eval()
    for m in model.modules():
        m.training = False
    return model


def example_input(spec: InputSpec) -> Any:
    """A seeded random example input of the spec's static shape (shapes only; values never validated)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.rand(spec.shape, generator=g)


def dynamic_batch_shapes(model: Any, max_batch: int = 1024) -> dict[str, Any]:
    """``torch.export`` dynamic shapes marking dim 0 of the forward's first argument as the batch."""
    import inspect

    import torch

    first = next(iter(inspect.signature(model.forward).parameters))
    return {first: {0: torch.export.Dim("batch", min=1, max=max_batch)}}


def finish_artifact(fmt: str, path: Path, files: list[Path], spec: InputSpec, batch: int, converter: str,
                    started: float, details: dict[str, Any], input_names: list[str],
                    output_names: list[str]) -> Artifact:
    """Hash and size the written files and return the ``Artifact`` record."""
    return Artifact(
        format=fmt, path=path, files=files, input_spec=spec, input_names=input_names, output_names=output_names,
        batch=batch, converter=converter, export_seconds=time.perf_counter() - started,
        sha256={f.name: sha256_file(f) for f in files}, size_bytes=sum(f.stat().st_size for f in files),
        details=details,
    )


def tail(path: Path, lines: int = 15) -> str:
    """Last lines of a converter log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
