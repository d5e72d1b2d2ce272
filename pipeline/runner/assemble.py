"""``report.json``'s content, assembled from what a run measured (rendering is report.py's job)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from edgeship.calibration.splits import Splits
from edgeship.core.artifact import Artifact, InputSpec
from edgeship.core.environment import host_info, library_versions
from edgeship.exporters.failures import ExportFailure
from edgeship.gates import REFERENCE_GATES
from edgeship.recipe import GateConfig, Recipe
from edgeship.runner.rundir import SCHEMA_VERSION, now


def failed_gates(results: list[dict[str, Any]]) -> list[str]:
    """``runtime: detail`` for every gate that failed on a gated row; a reference gate once, as ``reference: ...``."""
    lines = [f"{'reference' if g['gate'] in REFERENCE_GATES else r['runtime']}: {g['detail']}"
             for r in results if r.get("gated") for g in r.get("gates", []) if not g["passed"]]
    return list(dict.fromkeys(lines))


ROW_IDENTITY = ("runtime", "format", "precision", "precision_hint", "gated", "threads", "ops", "cross_check")


def carry_over(previous: dict[str, Any] | None, results: list[dict[str, Any]], artifacts: dict[str, Artifact],
               phases: tuple[str, ...]) -> list[str]:
    """Keep, in place, what a partial command did not measure again but an earlier report did (on the same files).

    ``edgeship validate`` after ``edgeship run`` must not drop the latency the run measured, nor ``profile`` the
    validation. A row takes the earlier row's missing measurements only when its artifact hashes as it did then.
    Returns a note per carried row (empty for a whole run, or when nothing matches).
    """
    if previous is None or set(phases) >= {"validate", "profile"}:
        return []
    old_rows = {r.get("runtime"): r for r in previous.get("results", [])}
    old_hashes = {fmt: a.get("sha256") for fmt, a in (previous.get("artifacts") or {}).items()}
    notes = []
    for row in results:
        old = old_rows.get(row["runtime"])
        fmt = row["format"]
        if old is None or fmt not in artifacts or old_hashes.get(fmt) != artifacts[fmt].sha256:
            continue
        kept = [k for k in old if k not in row and k not in ROW_IDENTITY]
        if kept:
            row.update({k: old[k] for k in kept})
            notes.append(f"{row['runtime']}: {', '.join(kept)} kept from the previous report of this run directory "
                         f"(measured on the same {fmt} file, {previous.get('created', 'earlier')})")
    return notes


def timing_notes(results: list[dict[str, Any]]) -> list[str]:
    """A note for every timed row whose figures are not facts: a p50 that never settled, or a busy device.

    The load average at the start of a row's timing process against that machine's cores: the rows before it
    account for up to ``threads`` runnable tasks; more than a further task per core means other work shared the
    CPU while it was timed.
    """
    notes = []
    for r in results:
        lat = r.get("latency") or {}
        if lat.get("stable") is False:
            notes.append(f"{r['runtime']}: latency noisy: the p50 of {lat['rounds']} rounds of {lat['runs']} runs "
                         f"varied by {lat['round_p50_cv']:.1%} (bound 5%); its ratios are not facts, re-run on an "
                         "idle machine")
        facts = r.get("device") or r.get("timing_process") or {}
        load, cores = (facts.get("load_average_start") or [0])[0], facts.get("cores") or 0
        if cores and load > cores + lat.get("threads", 0):
            notes.append(f"{r['runtime']}: the machine was busy while it was timed (load average {load:.1f} on "
                         f"{cores} cores): its latency and ratios are not facts")
    return notes


def latency_predictions(stages: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    """Put each latency-target prune stage's prediction beside the measured latency of the run's artifact.

    The row of the stage's runtime, its p50 against the unpruned twin's on the same runtime (the ratio the
    target is a fraction of), when no later stage changed what runs (a quantize, another prune or archify).
    """
    for i, s in enumerate(stages):
        lat = s.get("metrics", {}).get("latency")
        if s.get("type") != "prune" or not isinstance(lat, dict):
            continue
        lat.pop("artifact", None)  # a reused stage's record may carry an earlier run's
        later = [t["type"] for t in stages[i + 1:] if t.get("type") in ("quantize", "prune", "archify")]
        if later:
            lat["artifact"] = {"note": f"not comparable: a later {later[0]} stage changed the model"}
            continue
        row = next((r for r in results if r["runtime"] == lat["runtime"] and "baseline_latency" in r), None)
        if row is None:
            continue
        ratio = row["latency"]["p50"] / row["baseline_latency"]["p50"]
        lat["artifact"] = {"row": row["runtime"], "p50_ms": row["latency"]["p50"],
                           "unpruned_p50_ms": row["baseline_latency"]["p50"], "measured_ratio": round(ratio, 4),
                           "predicted_ratio": lat["predicted_ratio"],
                           "error": round(lat["predicted_ratio"] / ratio - 1, 4)}


def run_status(results: list[dict[str, Any]], failed: list[str], export_failures: dict[str, Any]) -> str:
    """``fail`` on any failure; ``pass`` only when some row was validated against its gates; else ``exported``."""
    if failed or export_failures:
        return "fail"
    return "pass" if any(r.get("gates") for r in results if r.get("gated")) else "exported"


def assemble_report(*, recipe: Recipe, started: float, model: torch.nn.Module, model_source: str,
                    spec: InputSpec, splits: Splits, health: dict[str, Any],
                    quantized: bool, quantization: dict[str, Any] | None, gate_config: GateConfig,
                    stages: list[dict[str, Any]], artifacts: dict[str, Artifact], run_dir: Path,
                    pytorch_latency: dict[str, Any] | None, results: list[dict[str, Any]],
                    op_check: dict[str, Any] | None, export_failures: dict[str, ExportFailure],
                    cross_runtime: dict[str, Any] | None, divergence: dict[str, Any] | None,
                    notes: list[str]) -> dict[str, Any]:
    """The whole ``report.json`` of one run (schema ``SCHEMA_VERSION``)."""
    failed = failed_gates(results)
    exports = {fmt: ({"status": "converted", "converter": artifacts[fmt].converter,
                      "route": artifacts[fmt].details.get("converted_from", "pytorch"),
                      "seconds": round(artifacts[fmt].export_seconds, 2)} if fmt in artifacts
                     else export_failures[fmt].to_dict())
               for fmt in recipe.export.formats if fmt in artifacts or fmt in export_failures}
    val = splits.validation
    return {
        "schema_version": SCHEMA_VERSION,
        "name": recipe.name,
        "created": now(),
        "status": run_status(results, failed, export_failures),
        "seed": recipe.seed,
        "threads": recipe.latency.threads,
        "device": recipe.device.url,  # each row's "device" says what answered there (name, CPU, OS, versions)
        "host": host_info(),
        "versions": library_versions(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "model": {"source": model_source, "weights": recipe.model.weights,
                  "parameters": int(sum(p.numel() for p in model.parameters())),
                  "input_spec": spec.to_dict()},
        "data": {"validation": val.origin, "calibration": splits.calibration.origin,
                 "validation_samples": len(val), "labels": val.y is not None},
        "quantization": quantization,
        "reference": {"kind": "PT2E quantized model (second reference: float model)" if quantized
                      else "pytorch eager fp32", "health": health,
                      "accuracy": health.get("accuracy")},  # reference_health measured it on the labels
        "gate_config": gate_config.model_dump(),
        "stages": [{k: v for k, v in s.items() if k != "files"} for s in stages],
        "exports": exports,
        "artifacts": {fmt: a.to_dict(run_dir) for fmt, a in artifacts.items()},
        "pytorch_latency": pytorch_latency,
        "results": results,
        "cross_runtime": cross_runtime,
        "divergence": divergence,
        "check": op_check,
        "failed_gates": failed,
        "failed_exports": [f.summary for f in export_failures.values()],
        "notes": notes,
        "recipe": recipe.dump(),
        "command": shlex.join(sys.argv),  # the process that ran it (the CLI's arguments, or a script's)
        "logs": sorted(str(p.relative_to(run_dir)) for p in (run_dir / "logs").glob("*") if p.is_file()),
    }
