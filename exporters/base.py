"""What every format provides (the ``Format`` record), the export context, and building the ``Artifact`` record."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.core.artifact import Artifact, InputSpec
from edgeship.core.errors import plain
from edgeship.core.io import ensure_free_space, sha256_file
from edgeship.core.ops import OpUse
from edgeship.core.validation import Strict


@dataclass
class ExportContext:
    """Where an exporter writes, the run-wide export settings, and a way to ask for another format's file.

    ``require(fmt)`` returns this model's artifact in another format, exporting it first if needed (OpenVINO
    may convert from the ONNX file): exporters never depend on the order they run in.
    """

    out_dir: Path  # the run's artifacts/ directory
    log_dir: Path  # converter logs land here (one file per format)
    quantizer: Any = None  # the PT2E quantizer when the model is a converted PT2E graph
    dynamic_batch: bool = False  # export.dynamic_batch: formats that can, export a dynamic batch dimension
    require: Callable[[str], Artifact] | None = None

    def artifact_of(self, fmt: str) -> Artifact:
        """The model's ``fmt`` artifact (see ``require``)."""
        if self.require is None:
            from edgeship.core.errors import ExportError

            raise ExportError(f"this export needs the {fmt} artifact of the model, and no other format can be "
                              "exported here")
        return self.require(fmt)


Exporter = Callable[[Any, InputSpec, ExportContext, Any], Artifact]


@dataclass(frozen=True)
class Format:
    """One export format as a registered unit: how to write it, what the recipe may set, how to list its ops.

    ``exporter(model, spec, ctx, options) -> Artifact`` writes ``artifact`` (a path under the artifacts
    directory); ``options`` is the recipe's ``export.<name>`` section, an instance of ``options``.
    ``read_ops(path)`` lists the ops of such a file in canonical names (``edgeship check``). ``suffix`` is the
    suffix of the file a runtime opens. ``runtimes`` validate it by default (``validate.runtimes``).
    """

    name: str
    suffix: str
    artifact: str
    options: type[Strict]
    exporter: Exporter
    read_ops: Callable[[Path], list[OpUse]]
    runtimes: tuple[str, ...] = field(default=())


def check_free_space(model: Any, ctx: ExportContext, fmt: str) -> None:
    """Refuse to start an export the disk cannot hold (fp32 weight bytes + 10% + 4 MB; quantized files are smaller).

    A converter that writes from native code dies with the process on a full disk; refused up front, the run
    exits 2 naming the folder and leaves nothing half-written.
    """
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    ensure_free_space(ctx.out_dir, int(weights * 1.1) + (4 << 20), f"the {fmt} export")


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


def tail(path: Path, lines: int = 10) -> str:
    """Last lines of a converter log, for error messages (terminal codes removed)."""
    try:
        return plain("\n".join(path.read_text(errors="replace").splitlines()[-lines:]), lines)
    except OSError:
        return ""


def converter_failed(what: str, e: Exception, log: Path) -> str:
    """The message of a failed conversion: the converter's first lines, the log's last, no terminal codes.

    torch's export errors run to ~45 lines with ANSI colour codes; the full text stays in the log.
    """
    return f"{what}: {type(e).__name__}: {plain(str(e), 4)}\nconverter log: {log}\n{tail(log)}"
