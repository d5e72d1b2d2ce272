"""The vocabulary exporters and targets share: ``InputSpec`` and ``Artifact``.

Kept dependency-free (no torch, no runtimes) so that ``targets`` can import it without importing
``pipeline`` and so that it serialises into the manifest and into artifact metadata unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: every artifact is fed exactly this, so runtimes see what the reference saw.

    ``shape`` includes the batch dimension (NCHW). ``mean``/``std`` are per channel and apply to pixel
    values scaled to [0, 1]. ``num_classes`` is the length of the logits vector.
    """

    shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    dtype: str = "float32"
    layout: str = "NCHW"

    @property
    def batch(self) -> int:
        """The static batch size of the example input."""
        return self.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (without batch)."""
        return tuple(self.shape[1:])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists, not tuples)."""
        d = asdict(self)
        d["shape"], d["mean"], d["std"] = list(self.shape), list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        """Compact JSON, embedded into artifact metadata."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Inverse of ``to_dict``."""
        return cls(
            shape=tuple(int(v) for v in d["shape"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            num_classes=int(d["num_classes"]),
            dtype=d.get("dtype", "float32"),
            layout=d.get("layout", "NCHW"),
        )


@dataclass
class Artifact:
    """One exported model on disk, described well enough for a runtime to load and feed it."""

    format: str  # "onnx" | "tflite" | "openvino"
    path: Path  # the file a runtime opens (for OpenVINO, the .xml)
    files: list[Path]  # every file that belongs to it (OpenVINO: .xml and .bin)
    input_spec: InputSpec
    input_names: list[str]
    output_names: list[str]
    batch: int  # static batch size, or -1 when dynamic
    converter: str  # library + version that produced it
    export_seconds: float = 0.0
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex digest
    size_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # opset, IR version, precisions, ...

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        """Manifest form; paths relative to ``root`` when given."""

        def rel(p: Path) -> str:
            return str(p.relative_to(root)) if root is not None else str(p)

        return {
            "format": self.format,
            "path": rel(self.path),
            "files": [rel(p) for p in self.files],
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "input_spec": self.input_spec.to_dict(),
            "input_names": self.input_names,
            "output_names": self.output_names,
            "batch": self.batch,
            "converter": self.converter,
            "export_seconds": round(self.export_seconds, 3),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], root: Path) -> Artifact:
        """Inverse of ``to_dict`` (paths resolved against ``root``)."""
        return cls(
            format=d["format"],
            path=root / d["path"],
            files=[root / p for p in d["files"]],
            input_spec=InputSpec.from_dict(d["input_spec"]),
            input_names=list(d["input_names"]),
            output_names=list(d["output_names"]),
            batch=int(d["batch"]),
            converter=d["converter"],
            export_seconds=float(d.get("export_seconds", 0.0)),
            sha256=dict(d.get("sha256", {})),
            size_bytes=int(d.get("size_bytes", 0)),
            details=dict(d.get("details", {})),
        )
