"""Runtime probes: export a candidate model the way the run will, and run it on every gated runtime.

Accuracy control decides which layers fall back; a decision the PT2E model meets can still miss on a runtime
that rounds differently, so each candidate that meets the target on the PT2E model is exported to the recipe's
formats and measured on its gated runtimes before it is accepted. The probe's files live in a temporary folder
under the stage's work directory and are gone when it returns: only the figures are kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeship.core.artifact import InputSpec
from edgeship.core.errors import plain
from edgeship.exporters import FORMATS, export_formats
from edgeship.exporters.base import ExportContext
from edgeship.exporters.failures import ExportFailure
from edgeship.runner.evaluation import Evaluator, row_label, rows_for
from edgeship.targets import parse_runtime

PROBE_LATENCY_RUNS = 20  # enough for a p50 to compare two candidates, a fraction of the report's own timing


class RuntimeProbe:
    """Measure a model on every gated row of the evaluator's recipe: logits on given rows, p50 when the run times."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def __call__(self, model: torch.nn.Module, spec: InputSpec, quantizer: Any, x: np.ndarray,
                 workdir: Path) -> dict[str, dict[str, Any]]:
        """Per row label: ``{"logits": array}`` (+ ``"p50_ms"`` when timing), or ``{"error": message}``.

        A format that fails to convert or a runtime that fails to run is reported in its rows, not raised: the
        run's own export and validation report it properly.
        """
        recipe = self.evaluator.recipe
        exp, lat = recipe.export, recipe.latency
        results: dict[str, dict[str, Any]] = {}

        def failed(f: ExportFailure) -> None:
            for runtime in recipe.validate_.runtimes.get(f.format, []):
                results[row_label(runtime, f.format)] = {"error": f"{f.format} export failed: {f.summary}"}

        with tempfile.TemporaryDirectory(prefix="probe-", dir=workdir) as tmp:
            ctx = ExportContext(out_dir=Path(tmp), log_dir=Path(tmp), quantizer=quantizer,
                                dynamic_batch=exp.dynamic_batch)
            artifacts = export_formats(model, spec, ctx, exp.formats, {n: getattr(exp, n) for n in FORMATS},
                                       on_failed=failed)
            for row in rows_for(recipe, artifacts):
                runtime, variant = parse_runtime(row.runtime)
                if row.cross or (variant and not runtime.variants[variant].gated):
                    continue
                try:
                    session, _ = self.evaluator.open(row.runtime, row.artifact)
                    entry: dict[str, Any] = {"logits": session.run(x)}
                    if self.evaluator.timing:
                        sample = x[: max(row.artifact.batch, 1)]
                        entry["p50_ms"] = session.latency(sample, lat.warmup, PROBE_LATENCY_RUNS).p50
                except Exception as e:  # a probe: the run's own validation reports this runtime's failure
                    entry = {"error": f"{type(e).__name__}: {plain(str(e), 1)}"}
                results[row.label] = entry
        return results
