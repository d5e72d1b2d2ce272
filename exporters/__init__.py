"""Export formats, registered explicitly: each entry is one module's ``FORMAT`` record (exporters/base.py).

Adding a format is a new module defining ``FORMAT`` plus one entry here; the recipe's ``export`` section, the
runner and ``edgeship check`` read this table. Converters (torch.onnx, litert-torch, openvino) are imported only
inside the export functions, so reading the table is cheap.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgeship.core.artifact import Artifact, InputSpec
from edgeship.core.ops import OpUse
from edgeship.exporters import onnx, openvino, tflite
from edgeship.exporters.base import ExportContext, Format
from edgeship.exporters.failures import ExportFailure, diagnose

# In report order; also the order formats are exported in.
FORMATS: dict[str, Format] = {f.name: f for f in (onnx.FORMAT, tflite.FORMAT, openvino.FORMAT)}


def get_format(name: str) -> Format:
    """The format registered as ``name``."""
    from edgeship.core.errors import ConfigError

    if name not in FORMATS:
        raise ConfigError(f"unknown export format {name!r}; valid formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of_file(path: Path) -> Format | None:
    """The format whose runtimes open files with ``path``'s suffix (None: no registered format)."""
    return next((f for f in FORMATS.values() if f.suffix == Path(path).suffix.lower()), None)


def artifact_ops(path: Path) -> list[OpUse]:
    """The ops of the artifact file at ``path``, read by its format's reader."""
    from edgeship.core.errors import ArtifactError, ConfigError

    fmt = format_of_file(path)
    if fmt is None:
        raise ConfigError(f"{path}: cannot list ops of this file; expected one of "
                          f"{', '.join(f.suffix for f in FORMATS.values())}")
    if not Path(path).is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        ops = fmt.read_ops(Path(path))
    except Exception as e:
        raise ArtifactError(f"{path}: could not read the model ({type(e).__name__}: {e})") from e
    if not ops:  # an empty or zero-node file would otherwise pass every profile
        raise ArtifactError(f"{path}: no operators found: an empty model proves nothing ({Path(path).stat().st_size} "
                            "bytes)")
    return ops


def export_formats(model: Any, spec: InputSpec, ctx: ExportContext, formats: Iterable[str],
                   options: dict[str, Any], on_start: Callable[[str], None] = lambda _f: None,
                   on_done: Callable[[Artifact], None] = lambda _a: None,
                   on_failed: Callable[[ExportFailure], None] | None = None) -> dict[str, Artifact]:
    """Export ``model`` to every format in ``formats`` under ``ctx.out_dir``; return the artifacts by format.

    A format another exporter asks for (``ctx.artifact_of``) is exported once: into ``ctx.out_dir`` when it was
    requested anyway, else into a temporary directory that is gone when this returns. With ``on_failed``, a
    converter failure (``ExportError``) of one format is reported to it and the other formats are still
    exported (a format converted from the failed one fails too, saying so); without, it is raised.
    """
    from edgeship.core.errors import ExportError
    from edgeship.core.graph import example_input

    wanted = list(formats)
    done: dict[str, Artifact] = {}
    failed: dict[str, ExportError] = {}
    with tempfile.TemporaryDirectory(prefix="edgeship-export-") as scratch:

        def export(name: str) -> Artifact:
            if name in failed:
                raise ExportError(f"needs the {name} artifact, whose export failed: "
                                  f"{str(failed[name]).splitlines()[0]}")
            if name not in done:
                out_dir = ctx.out_dir if name in wanted else Path(scratch)
                sub = ExportContext(out_dir=out_dir, log_dir=ctx.log_dir, quantizer=ctx.quantizer,
                                    dynamic_batch=ctx.dynamic_batch, require=export)
                if name in wanted:
                    on_start(name)
                try:
                    done[name] = get_format(name).exporter(model, spec, sub, options[name])
                except ExportError as e:
                    failed[name] = e
                    raise
                if name in wanted:
                    on_done(done[name])
            return done[name]

        for name in wanted:
            try:
                export(name)
            except ExportError as e:
                if on_failed is None:
                    raise
                on_failed(diagnose(name, str(e), model, example_input(spec)))
    return {name: done[name] for name in wanted if name in done}
