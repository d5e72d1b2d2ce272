"""Evaluation of exported artifacts: validate each on its runtimes, time it and its twins, lint its ops.

A *row* is one artifact on one runtime (``validate.runtimes``); *twins* are the same model exported without the
last compression (``fp32``: the float model of a quantized run; ``baseline``: the model before pruning), timed on
the same runtime so every speed-up is measured, not estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeship.calibration.splits import Splits
from edgeship.core.artifact import Artifact, InputSpec
from edgeship.core.errors import plain
from edgeship.core.io import captured_output
from edgeship.gates import evaluate_gates, resolve_gates
from edgeship.metrics import compare
from edgeship.recipe import GateConfig, Recipe
from edgeship.stage import ModelState
from edgeship.targets import RUNTIMES, open_session, parse_runtime, runtime_options
from edgeship.targets.base import RuntimeSession, time_callable
from edgeship.targets.devices import LocalProcess, connect
from edgeship.targets.hotspots import hot_spots

VS_FLOAT_KEYS = ("top1_agreement", "differing_labels", "mismatch", "mismatch_when_reference_correct", "rel_max_err",
                 "cosine", "sqnr_db", "accuracy")


@dataclass(frozen=True)
class Row:
    """One artifact on one runtime: ``label`` names it in the report (``openvino@default``, ``openvino(onnx)``)."""

    label: str
    runtime: str  # name[@variant], as validate.runtimes lists it
    artifact: Artifact
    cross: bool = False  # a cross-check: another runtime that reads this file (validated, not gated or timed)


def rows_for(recipe: Recipe, artifacts: dict[str, Artifact]) -> list[Row]:
    """Every (artifact, runtime) pair ``validate.runtimes`` asks for, in format order, then the cross-checks.

    With ``validate.cross_check`` every other registered runtime that reads an artifact runs it too.
    """
    rows = []
    for fmt, artifact in artifacts.items():
        listed = recipe.validate_.runtimes.get(fmt, [])
        for spec in listed:
            rows.append(Row(label=row_label(spec, fmt), runtime=spec, artifact=artifact))
        if recipe.validate_.cross_check:
            named = {parse_runtime(spec)[0].name for spec in listed}
            rows += [Row(label=row_label(name, fmt), runtime=name, artifact=artifact, cross=True)
                     for name, runtime in RUNTIMES.items() if fmt in runtime.formats and name not in named]
    return rows


def row_label(spec: str, fmt: str) -> str:
    """``spec`` on a format of its own (the plain name), else ``spec(fmt)``: ``openvino(onnx)``."""
    runtime, _ = parse_runtime(spec)
    return spec if runtime.formats[0] == fmt else f"{spec}({fmt})"


@dataclass
class Evaluation:
    """What every row is measured against: the references, their health and the PyTorch eager latency."""

    splits: Splits
    reference: np.ndarray  # the final PyTorch model's logits on the validation split (PT2E model when quantized)
    float_reference: np.ndarray | None  # the float model's logits (quantized runs), the second reference
    health: dict[str, Any]  # reference_health; quantized runs add the float model's under "float"
    pytorch_latency: dict[str, Any] | None
    gates: GateConfig  # resolved: no "auto" left
    output_step: float = 0.0  # the quantized reference's output quantization step (0: float reference)
    rounding: np.ndarray | None = None  # labels the quantized reference gives under rounding-sized perturbations


class Evaluator:
    """Validates and times rows for one run under the recipe's settings; runtime chatter goes to ``logs/``."""

    def __init__(self, recipe: Recipe, run_dir: Path, log: Callable[[str], None],
                 phases: tuple[str, ...]) -> None:
        self.recipe, self.run_dir, self.log, self.phases = recipe, run_dir, log, phases
        self.outputs: dict[str, np.ndarray] = {}  # validation logits by row label (the cross-runtime matrix)
        self.device = connect(recipe.device)  # where the rows run (None: here)

    @property
    def validating(self) -> bool:
        """True when this run validates (the phase was asked for and ``validate.enabled``)."""
        return "validate" in self.phases and self.recipe.validate_.enabled

    @property
    def timing(self) -> bool:
        """True when this run measures latency (the phase was asked for and ``latency.enabled``)."""
        return "profile" in self.phases and self.recipe.latency.enabled

    def open(self, runtime: str, artifact: Artifact) -> tuple[RuntimeSession, bool]:
        """A loaded session of ``runtime`` on ``artifact``, and whether its row is gated."""
        session, gated = open_session(runtime, artifact, self.recipe.latency.threads)
        with captured_output(self.run_dir / "logs" / "runtimes.log"):
            session.load()
        return session, gated

    def gate_config(self, quantized: bool, weight_bits: int | None, num_classes: int) -> GateConfig:
        """The gates that apply, resolved: ``quantized_gates`` (reference: the PT2E model) or the fp32 ``gates``.

        ``weight_bits``: the narrowest layer's weight width, and ``num_classes``, pick the ``auto`` thresholds.
        """
        v = self.recipe.validate_
        return resolve_gates(v.quantized_gates if quantized else v.gates, weight_bits if quantized else None,
                             num_classes)

    def validate(self, session: RuntimeSession, ev: Evaluation, gated: bool, label: str) -> dict[str, Any]:
        """Run the validation split on ``session``; compare with the reference (and the float model, if quantized)."""
        return self.judge(session.run(ev.splits.validation.x), ev, gated, label)

    def judge(self, out: np.ndarray, ev: Evaluation, gated: bool, label: str) -> dict[str, Any]:
        """Metrics and gates of a row's validation outputs ``out`` (from this process or from a device)."""
        val = ev.splits.validation
        self.outputs[label] = out
        metrics = compare(out, ev.reference, val.y, ev.output_step, ev.rounding)
        vs_float = compare(out, ev.float_reference, val.y) if ev.float_reference is not None else None
        gates = evaluate_gates(metrics, ev.health, ev.gates, vs_float)
        result = {"metrics": metrics, "gates": [g.to_dict() for g in gates],
                  "status": ("pass" if all(g.passed for g in gates) else "fail") if gated else "info"}
        if vs_float is not None:
            result["metrics_vs_float"] = {k: vs_float[k] for k in VS_FLOAT_KEYS if k in vs_float}
        return result

    def measure(self, row: Row, ev: Evaluation, twins: dict[str, Artifact]) -> dict[str, Any]:
        """Validate and time one row, and time its twins on the same runtime (a cross-check: validate only)."""
        if self.device is not None:
            return self.measure_on_device(row, ev, twins)
        if row.cross:
            return self.cross_check(row, ev)
        session, gated = self.open(row.runtime, row.artifact)
        entry: dict[str, Any] = {"runtime": row.label, "format": row.artifact.format, "precision": session.precision,
                                 **({"precision_hint": session.precision_hint} if session.precision_hint else {}),
                                 "gated": gated, "threads": session.threads,
                                 "ops": [vars(o) for o in session.op_report()]}
        if self.validating:
            self.log(f"validate {row.label}: {len(ev.splits.validation)} samples")
            entry.update(self.validate(session, ev, gated, row.label))
        del session  # its thread pool and memory are released before another process is timed beside this one
        if self.timing:
            lat = self.recipe.latency
            self.log(f"profile {row.label}: {lat.runs} runs, {lat.threads} threads, in a fresh process")
            sample = ev.splits.validation.x[: max(row.artifact.batch, 1)]
            job = self.job(row, validate=False, profile=True)
            answer, _ = LocalProcess().execute(job, row.artifact.files, sample)
            entry["latency"] = answer["latency"]
            entry["timing_process"] = {k: v for k, v in answer.items() if k not in ("latency", "op_profile")}
            self.add_hot_spots(entry, row, answer)
            if ev.pytorch_latency:
                entry["speedup_vs_pytorch"] = round(ev.pytorch_latency["p50"] / entry["latency"]["p50"], 3)
            for name, twin_artifact in twins.items():
                entry[f"{name}_precision"] = self.open(row.runtime, twin_artifact)[0].precision  # then released
                self.log(f"profile {row.label} {name} twin ({entry[f'{name}_precision']})")
                entry[f"{name}_latency"] = LocalProcess().execute({**job, "op_profile": False}, twin_artifact.files,
                                                                  sample)[0]["latency"]
                entry[f"speedup_vs_{name}"] = round(entry[f"{name}_latency"]["p50"] / entry["latency"]["p50"], 3)
        return entry

    def job(self, row: Row, validate: bool, profile: bool) -> dict[str, Any]:
        """What the device runner does for ``row``: its runtime and options (a variant's too), batch and timing."""
        lat = self.recipe.latency
        return {"runtime": parse_runtime(row.runtime)[0].name, "options": runtime_options(row.runtime)[0],
                "batch": row.artifact.batch, "threads": lat.threads, "warmup": lat.warmup, "runs": lat.runs,
                "validate": validate, "profile": profile, "op_profile": profile and lat.op_profile}

    def add_hot_spots(self, entry: dict[str, Any], row: Row, answer: dict[str, Any]) -> None:
        """The row's per-op profile from the runner's answer, as ``entry["op_profile"]``, and its top op logged."""
        if "op_profile" not in answer:
            return
        spots = hot_spots(parse_runtime(row.runtime)[0].name, row.artifact, answer["op_profile"],
                          answer["latency"]["p50"])
        entry["op_profile"] = spots
        if "error" in spots:
            self.log(f"profile {row.label}: no op profile ({plain(spots['error'], 1)})")
        elif spots["ops"]:
            top = spots["ops"][0]
            self.log(f"profile {row.label}: ops account for {spots['coverage']:.0%} of p50; slowest "
                     f"{top['type']} {top['module'] or top['name']} {top['ms']:.3f} ms ({top['precision']})")

    def measure_on_device(self, row: Row, ev: Evaluation, twins: dict[str, Artifact]) -> dict[str, Any]:
        """One row on the recipe's device, through the device runner in a fresh process there.

        What ran at which precision is read here from the same file (the device runs that very file); speed-ups
        against PyTorch are left out, since PyTorch ran on this machine, while the twins are timed on the device.
        """
        assert self.device is not None
        if row.cross:  # a cross-check informs, as it does locally: a device that cannot run it is reported
            try:
                return self._device_row(row, ev, twins)
            except Exception as e:
                self.log(f"cross-check {row.label}: could not run: {plain(str(e), 1)}")
                return {"runtime": row.label, "format": row.artifact.format, "precision": "—", "cross_check": True,
                        "gated": False, "status": "error", "error": plain(str(e), 3)}
        return self._device_row(row, ev, twins)

    def _device_row(self, row: Row, ev: Evaluation, twins: dict[str, Artifact]) -> dict[str, Any]:
        assert self.device is not None
        job = self.job(row, validate=self.validating, profile=self.timing and not row.cross)
        runs = getattr(self.device, "runtimes", None)
        if runs is not None and job["runtime"] not in runs:  # an Android phone runs LiteRT's benchmark_model only
            self.log(f"{row.label}: not run on {self.device.url} (it runs {', '.join(runs)} only)")
            return {"runtime": row.label, "format": row.artifact.format, "precision": "—", "gated": False,
                    "status": "skipped", "device": {"url": self.device.url},
                    "note": f"not run: {self.device.url} runs {', '.join(runs)} only"}
        self.log(f"{'cross-check' if row.cross else 'validate/profile'} {row.label} on {self.device.url}")
        answer, out = self.device.execute(job, row.artifact.files, ev.splits.validation.x)
        session, gated = self.open(row.runtime, row.artifact)
        gated = gated and not row.cross
        entry: dict[str, Any] = {"runtime": row.label, "format": row.artifact.format, "precision": session.precision,
                                 "gated": gated, "threads": job["threads"],
                                 "ops": [vars(o) for o in session.op_report()],
                                 **({"cross_check": True} if row.cross else {}),
                                 "device": {"url": self.device.url,
                                            **{k: v for k, v in answer.items() if k not in ("latency",
                                                                                             "op_profile")}}}
        if out is not None:
            entry.update(self.judge(out, ev, gated, row.label))
        elif "validation" in answer:  # the device cannot validate (Android's benchmark_model): said, not gated
            entry.update(status="info", gated=False, note=answer["validation"])
        if "latency" in answer:
            entry["latency"] = answer["latency"]
            self.add_hot_spots(entry, row, answer)
            for name, twin in twins.items():
                twin_answer, _ = self.device.execute({**job, "validate": False, "op_profile": False}, twin.files,
                                                     ev.splits.validation.x[: max(twin.batch, 1)])
                entry[f"{name}_latency"] = twin_answer["latency"]
                entry[f"speedup_vs_{name}"] = round(twin_answer["latency"]["p50"] / answer["latency"]["p50"], 3)
        return entry

    def cross_check(self, row: Row, ev: Evaluation) -> dict[str, Any]:
        """Another runtime on the same file, validated only; a runtime that cannot read it is reported, not raised."""
        entry: dict[str, Any] = {"runtime": row.label, "format": row.artifact.format, "precision": "—",
                                 "cross_check": True, "gated": False}
        if not self.validating:
            return {**entry, "status": "skipped"}
        self.log(f"cross-check {row.label}: {len(ev.splits.validation)} samples")
        try:
            session, _ = self.open(row.runtime, row.artifact)
            entry.update({"precision": session.precision, "threads": session.threads,
                          "ops": [vars(o) for o in session.op_report()]})
            entry.update(self.validate(session, ev, False, row.label))
        except Exception as e:  # a cross-check informs; it must not take the gated rows down with it
            self.log(f"cross-check {row.label}: could not run: {type(e).__name__}: {plain(str(e), 1)}")
            return {**entry, "status": "error", "error": f"{type(e).__name__}: {plain(str(e), 3)}"}
        return entry

    def pytorch_latency(self, model: torch.nn.Module, spec: InputSpec) -> dict[str, Any]:
        """PyTorch eager fp32 latency under the same thread count: the baseline of every ratio."""
        lat = self.recipe.latency
        previous = torch.get_num_threads()
        torch.set_num_threads(lat.threads)
        try:
            x = torch.from_numpy(np.ascontiguousarray(np.random.default_rng(0).random(spec.shape, dtype=np.float32)))
            with torch.inference_mode():
                return time_callable(lambda: model(x), lat.warmup, lat.runs, lat.threads, spec.batch).to_dict()
        finally:
            torch.set_num_threads(previous)

    def check_ops(self, state: ModelState, splits: Splits, artifacts: dict[str, Artifact]) -> dict[str, Any]:
        """Lint the final PyTorch graph and every artifact against ``check.profile`` (one pass, every violation)."""
        from edgeship.opcheck import check
        from edgeship.targets.profile import load_profile

        profile = load_profile(self.recipe.check.profile)
        self.log(f"check: op support against the {profile.name} profile")
        with captured_output(self.run_dir / "logs" / "check.log"):  # torch.export's graph dumps stay in logs/
            report = check(profile, state.model, torch.from_numpy(splits.validation.x[:1]),
                           {fmt: a.path for fmt, a in artifacts.items()}, state.bits)
        for v in report.violations:
            self.log(f"check {v.level}: {v.count} x {v.op} ({v.reason}: {v.detail}), e.g. {v.where[0]}")
        return report.to_dict()


def quantization_summary(state: ModelState, artifacts: dict[str, Artifact],
                         fp32_artifacts: dict[str, Artifact]) -> dict[str, Any]:
    """Bit widths per layer and each artifact's size against fp32 (its exported twin, else the weights)."""
    assert state.float_model is not None and state.bits is not None  # a quantized state carries both
    fp32_bytes = sum(p.numel() * 4 for p in state.float_model.parameters())
    sizes = {}
    for fmt, a in artifacts.items():
        base = fp32_artifacts[fmt].size_bytes if fmt in fp32_artifacts else fp32_bytes
        sizes[fmt] = {"bytes": a.size_bytes, "fp32_bytes": base, "ratio_vs_fp32": round(a.size_bytes / base, 4),
                      "fp32_basis": "exported fp32 twin" if fmt in fp32_artifacts else "fp32 parameter bytes"}
    return {"bits": [vars(b) for b in state.bits], "sizes": sizes}

