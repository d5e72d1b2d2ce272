"""One recipe -> one run directory: stages, exports, validation on each runtime, profiling, report.

Every file is written atomically and recorded with its sha256 in ``manifest.json``; ``--resume`` reuses a
stage only when its cache key (stage config, input model, data, seed, versions) and file hashes match.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from calibration.splits import Splits, make_splits
from exporters import get_exporter
from exporters.artifact import Artifact, InputSpec
from exporters.base import ExportContext, eval_mode
from pipeline._io import (
    atomic_write_json,
    atomic_write_text,
    captured_output,
    clean_stale_temporaries,
    sha256_file,
)
from pipeline.environment import host_info, library_versions
from pipeline.errors import ConfigError
from pipeline.gates import evaluate_gates
from pipeline.metrics import compare, reference_health
from pipeline.models import build_model, load_weights
from pipeline.recipe import GateConfig, Recipe
from pipeline.stage import ModelState, StageContext
from pipeline.stages import build_stage
from pipeline.trainer import is_main_process
from pipeline.training import predict
from targets import DEFAULT_TARGET_FOR_FORMAT, get_target_class
from targets.base import time_callable

SCHEMA_VERSION = 1


@dataclass
class RunOutcome:
    """Where the run went and whether it passes its gates."""

    run_dir: Path
    report: dict[str, Any]
    failed_gates: list[str] = field(default_factory=list)
    unsupported: int = 0  # violating op instances when check.fail_on_unsupported is set

    @property
    def passed(self) -> bool:
        """True when every gate of every gated target passed."""
        return not self.failed_gates


def prepare_run_dir(recipe: Recipe, out: str | Path | None) -> Path:
    """Create the run directory and prove it is writable before any work starts."""
    run_dir = Path(out) if out else Path(recipe.output_dir) / recipe.name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory {run_dir} is not writable ({e.strerror or e}); "
                          f"choose another with --out or output_dir") from None
    clean_stale_temporaries(run_dir)
    return run_dir


class Manifest:
    """``manifest.json``: stage status, every file's sha256, versions and seed; rewritten atomically."""

    def __init__(self, run_dir: Path, recipe: Recipe) -> None:
        self.path = run_dir / "manifest.json"
        self.run_dir = run_dir
        previous: dict[str, Any] = {}
        if self.path.is_file():
            try:
                previous = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                previous = {}
        self.previous_stages = {s["key"]: s for s in previous.get("stages", []) if s.get("status") == "done"}
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "name": recipe.name, "seed": recipe.seed,
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "status": "running",
            "versions": library_versions(), "stages": [], "artifacts": {}, "files": {},
        }

    def record_file(self, path: Path) -> str:
        """Hash ``path`` and record it (relative to the run dir)."""
        digest = sha256_file(path)
        self.data["files"][str(path.relative_to(self.run_dir))] = digest
        return digest

    def verified(self, entry: dict[str, Any]) -> bool:
        """True when every file a previous stage entry lists still exists with the same hash."""
        return all((self.run_dir / rel).is_file() and sha256_file(self.run_dir / rel) == digest
                   for rel, digest in entry.get("files", {}).items())

    def save(self, status: str | None = None) -> None:
        """Rewrite the manifest atomically (rank 0 only under torchrun)."""
        if not is_main_process():
            return
        if status:
            self.data["status"] = status
            self.data["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write_json(self.path, self.data)


def _hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _state_dict_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Runner:
    """Executes one recipe. ``log`` receives progress lines; ``resume`` reuses verified stages."""

    def __init__(self, recipe: Recipe, run_dir: Path, *, resume: bool = False,
                 log: Callable[[str], None] = print, phases: tuple[str, ...] = ("export", "validate", "profile")):
        self.recipe = recipe
        self.run_dir = run_dir
        self.resume = resume
        # Under torchrun every rank runs the stages (training stages synchronise through DDP); only rank 0
        # writes files, exports, validates and reports.
        self.main = is_main_process()
        self.log = log if self.main else (lambda _m: None)
        self.phases = phases
        self.notes: list[str] = []
        self.manifest = Manifest(run_dir, recipe)

    # -- setup -----------------------------------------------------------------------------------------------
    def input_spec(self) -> InputSpec:
        """The recipe's input contract."""
        i = self.recipe.model.input
        return InputSpec(shape=tuple(i.shape), mean=tuple(i.mean), std=tuple(i.std), num_classes=i.num_classes)

    def build(self, spec: InputSpec) -> torch.nn.Module:
        """Build the model, load weights, and prove the input shape and class count fit it."""
        cfg = self.recipe.model
        torch.manual_seed(self.recipe.seed)
        model = build_model(cfg.source, spec.num_classes)
        if cfg.weights:
            load_weights(model, Path(cfg.weights))
        model.eval()
        try:
            with torch.inference_mode():
                out = model(torch.zeros(spec.shape))
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"model.input.shape {list(spec.shape)} does not fit {cfg.source}: the forward pass "
                              f"failed with {type(e).__name__}: {first}") from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape != (spec.batch, spec.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"model.input: {cfg.source} returns {shape} for input {list(spec.shape)}; expected "
                              f"logits of shape ({spec.batch}, {spec.num_classes}) (check model.input.num_classes)")
        return model

    def data(self, spec: InputSpec) -> Splits:
        """Load and split the recipe's data sources."""
        d = self.recipe.data
        splits = make_splits(d.calibration.source, d.validation.source, d.calibration.samples,
                             d.validation.samples, d.seed, spec.sample_shape, spec.mean, spec.std)
        self.notes.extend(splits.notes)
        if d.validation.source.startswith("synthetic"):
            self.notes.append("validation data is synthetic noise: agreement on it is a smoke test, not evidence")
        return splits

    # -- stages ----------------------------------------------------------------------------------------------
    def run_stages(self, state: ModelState, splits: Splits) -> tuple[ModelState, list[dict[str, Any]]]:
        """Run (or reuse, with --resume) each stage in order; return the final state and the stage records."""
        weights_hash = sha256_file(Path(self.recipe.model.weights)) if self.recipe.model.weights else None
        prev_key = _hash_json({"source": self.recipe.model.source, "weights": weights_hash,
                               "spec": state.spec.to_dict(), "seed": self.recipe.seed})
        data_key = [splits.train.fingerprint(), splits.calibration.fingerprint(), splits.validation.fingerprint()]
        records = []
        # The model before compression: distill's default teacher and the pruned run's timed baseline.
        needs_reference = any(s.type in ("prune", "distill") for s in self.recipe.stages)
        for i, spec in enumerate(self.recipe.stages, start=1):
            stage = build_stage(spec.model_dump(), f"stages.{i - 1}")
            key = _hash_json({"stage": stage.config.model_dump(), "input": prev_key, "data": data_key,
                              "seed": self.recipe.seed, "versions": library_versions()})
            workdir = self.run_dir / "stages" / f"{i:02d}-{stage.name}"
            cached = self.manifest.previous_stages.get(key)
            ctx = StageContext(workdir=workdir, splits=splits, seed=self.recipe.seed, log=self.log,
                               resume=self.resume, fingerprint=key)
            if needs_reference and stage.name != "train" and "reference" not in state.extras:
                state.extras["reference"] = copy.deepcopy(state.model).eval()
            if self.resume and cached and self.manifest.verified(cached):
                state = stage.load(state, ctx)
                entry = {**cached, "reused": True}
                self.log(f"stage {i} {stage.name}: reused (inputs and config unchanged, files verified)")
            else:
                self.log(f"stage {i} {stage.name}: running")
                workdir.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                result = stage.run(state, ctx)
                state = result.state
                eval_mode(state.model)
                files = stage.save(state, ctx) if self.main else []
                self.notes.extend(result.notes)
                entry = {"index": i, "type": stage.name, "key": key, "status": "done", "reused": False,
                         "seconds": round(time.perf_counter() - t0, 2), "config": stage.config.model_dump(),
                         "metrics": result.metrics,
                         "files": {str(f.relative_to(self.run_dir)): sha256_file(f) for f in files}}
            self.manifest.data["files"].update(entry["files"])
            self.manifest.data["stages"].append(entry)
            self.manifest.save()
            state.history.append({"stage": stage.name, "metrics": entry["metrics"]})
            records.append(entry)
            prev_key = key
        return state, records

    # -- export, validate, profile ---------------------------------------------------------------------------
    def export(self, model: torch.nn.Module, spec: InputSpec, quantizer: Any = None,
               subdir: str = "artifacts") -> dict[str, Artifact]:
        """Write every requested format under ``subdir``; each artifact appears only once complete."""
        exp = self.recipe.export
        ctx = ExportContext(out_dir=self.run_dir / subdir, log_dir=self.run_dir / "logs", quantizer=quantizer)
        options: dict[str, dict[str, Any]] = {
            "onnx": {"opset": exp.onnx.opset, "dynamic_batch": exp.dynamic_batch,
                     "int4_weights": exp.onnx.int4_weights, "uint8_activations": exp.onnx.uint8_activations},
            "tflite": {"int8_io": exp.tflite.int8_io},
            "openvino": {"source": exp.openvino.source, "compress_to_fp16": exp.openvino.compress_to_fp16,
                         "dynamic_batch": exp.dynamic_batch},
        }
        artifacts = {}
        where = "" if subdir == "artifacts" else f" ({subdir})"
        for fmt in exp.formats:
            self.log(f"export {fmt}{where}: converting")
            artifact = get_exporter(fmt)(model, spec, ctx, **options[fmt])
            for f in artifact.files:
                self.manifest.record_file(f)
            key = fmt if subdir == "artifacts" else f"{subdir.removeprefix('artifacts/')}/{fmt}"
            self.manifest.data["artifacts"][key] = artifact.to_dict(self.run_dir)
            self.manifest.save()
            self.log(f"export {fmt}{where}: {artifact.size_bytes / 1e6:.2f} MB in {artifact.export_seconds:.1f} s "
                     f"({artifact.converter})")
            artifacts[fmt] = artifact
        return artifacts

    def targets_for(self, artifacts: dict[str, Artifact]) -> list[tuple[str, Artifact, dict[str, Any], bool]]:
        """(label, artifact, target options, gated) for every runtime to validate and profile."""
        out = []
        for fmt, artifact in artifacts.items():
            name = DEFAULT_TARGET_FOR_FORMAT[fmt]
            if name == "openvino":
                out.append(("openvino", artifact, {"precision": "f32"}, True))
                # What a device team gets out of the box (bf16 on AVX512-BF16/AMX CPUs): reported, not gated.
                out.append(("openvino@default", artifact, {"precision": "default"}, False))
            else:
                out.append((name, artifact, {}, True))
        return out

    def load_target(self, label: str, artifact: Artifact, options: dict[str, Any]) -> Any:
        """Instantiate and load the runtime for ``label`` (runtime chatter goes to logs/runtimes.log)."""
        cls = get_target_class(label.split("@")[0])
        target = cls(artifact, threads=self.recipe.profile.threads, **options)
        with captured_output(self.run_dir / "logs" / "runtimes.log"):
            target.load()
        return target

    def validate(self, target: Any, splits: Splits, ref: np.ndarray, health: dict[str, Any], gated: bool,
                 float_ref: np.ndarray | None = None) -> dict[str, Any]:
        """Run the validation split on ``target``; compare with the reference (and the float model, if quantized)."""
        out = target.run(splits.validation.x)
        metrics = compare(out, ref, splits.validation.y)
        gates = evaluate_gates(metrics, health, self.gate_config(quantized=float_ref is not None))
        result = {"metrics": metrics, "gates": [g.to_dict() for g in gates],
                  "status": ("pass" if all(g.passed for g in gates) else "fail") if gated else "info"}
        if float_ref is not None:
            vs_float = compare(out, float_ref, splits.validation.y)
            result["metrics_vs_float"] = {k: vs_float[k] for k in (
                "top1_agreement", "mismatch", "mismatch_when_reference_correct", "rel_max_err", "cosine",
                "sqnr_db", "accuracy") if k in vs_float}
        return result

    def gate_config(self, quantized: bool) -> GateConfig:
        """The gates that apply: ``quantized_gates`` (reference: the PT2E model) or the fp32 ``gates``."""
        v = self.recipe.validate_
        return v.quantized_gates if quantized else v.gates

    def measure(self, label: str, artifact: Artifact, options: dict[str, Any], gated: bool, splits: Splits,
                ref: np.ndarray, float_ref: np.ndarray | None, health: dict[str, Any],
                pytorch_latency: dict[str, Any] | None, twins: dict[str, Artifact]) -> dict[str, Any]:
        """Validate and profile one artifact on one runtime, and time its twins on the same runtime.

        Twins: ``fp32`` (the float model of a quantized run) and ``baseline`` (the model before pruning).
        """
        recipe = self.recipe
        target = self.load_target(label, artifact, options)
        entry: dict[str, Any] = {"target": label, "format": artifact.format, "precision": target.precision,
                                 **({"precision_hint": target.precision_hint}
                                    if hasattr(target, "precision_hint") else {}),
                                 "gated": gated, "threads": target.threads,
                                 "ops": [vars(o) for o in target.op_report()]}
        if "validate" in self.phases and recipe.validate_.enabled:
            self.log(f"validate {label}: {len(splits.validation)} samples")
            entry.update(self.validate(target, splits, ref, health, gated, float_ref))
        if "profile" in self.phases and recipe.profile.enabled:
            p = recipe.profile
            self.log(f"profile {label}: {p.runs} runs, {p.threads} threads")
            sample = splits.validation.x[: max(artifact.batch, 1)]
            entry["latency"] = target.profile(sample, p.warmup, p.runs).to_dict()
            if pytorch_latency:
                entry["speedup_vs_pytorch"] = round(pytorch_latency["p50"] / entry["latency"]["p50"], 3)
            for name, twin_artifact in twins.items():
                twin = self.load_target(label, twin_artifact, options)
                self.log(f"profile {label} {name} twin ({twin.precision})")
                entry[f"{name}_latency"] = twin.profile(sample, p.warmup, p.runs).to_dict()
                entry[f"{name}_precision"] = twin.precision
                entry[f"speedup_vs_{name}"] = round(entry[f"{name}_latency"]["p50"] / entry["latency"]["p50"], 3)
        return entry

    def check_ops(self, state: ModelState, splits: Splits, artifacts: dict[str, Artifact]) -> dict[str, Any]:
        """Lint the final PyTorch graph and every artifact against ``check.profile`` (one pass, every violation)."""
        from pipeline.check import check
        from targets.profile import load_profile

        profile = load_profile(self.recipe.check.profile)
        self.log(f"check: op support against the {profile.name} profile")
        report = check(profile, state.model, torch.from_numpy(splits.validation.x[:1]),
                       {fmt: a.path for fmt, a in artifacts.items()}, state.extras.get("bits"))
        for v in report.violations:
            self.log(f"check {v.level}: {v.count} x {v.op} ({v.reason}: {v.detail}), e.g. {v.where[0]}")
        return report.to_dict()

    def profile_pytorch(self, model: torch.nn.Module, spec: InputSpec) -> dict[str, Any]:
        """PyTorch eager fp32 latency under the same thread count: the baseline of every ratio."""
        p = self.recipe.profile
        previous = torch.get_num_threads()
        torch.set_num_threads(p.threads)
        try:
            x = torch.from_numpy(np.ascontiguousarray(np.random.default_rng(0).random(spec.shape, dtype=np.float32)))
            with torch.inference_mode():
                return time_callable(lambda: model(x), p.warmup, p.runs, p.threads, spec.batch).to_dict()
        finally:
            torch.set_num_threads(previous)

    def quantization_summary(self, state: ModelState, artifacts: dict[str, Artifact],
                             fp32_artifacts: dict[str, Artifact]) -> dict[str, Any]:
        """Bit widths per layer and each artifact's size against fp32 (its exported twin, else the weights)."""
        float_model = state.extras["float_model"]
        fp32_bytes = sum(p.numel() * 4 for p in float_model.parameters())
        sizes = {}
        for fmt, a in artifacts.items():
            base = fp32_artifacts[fmt].size_bytes if fmt in fp32_artifacts else fp32_bytes
            sizes[fmt] = {"bytes": a.size_bytes, "fp32_bytes": base, "ratio_vs_fp32": round(a.size_bytes / base, 4),
                          "fp32_basis": "exported fp32 twin" if fmt in fp32_artifacts else "fp32 parameter bytes"}
        return {"bits": [vars(b) for b in state.extras["bits"]], "sizes": sizes}

    # -- the whole run -----------------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Execute the recipe end to end and write the report."""
        from pipeline.report import write_report

        t_start = time.perf_counter()
        recipe = self.recipe
        if self.main:
            atomic_write_text(self.run_dir / "recipe.resolved.yaml", yaml.safe_dump(recipe.dump(), sort_keys=False))
            self.manifest.record_file(self.run_dir / "recipe.resolved.yaml")
            self.manifest.save()
        try:
            spec = self.input_spec()
            model = self.build(spec)
            splits = self.data(spec)
            self.log(f"data: validation {len(splits.validation)} samples ({splits.validation.origin}); "
                     f"calibration {len(splits.calibration)}; train {len(splits.train)}")
            state = ModelState(model=model, spec=spec)
            state, stages = self.run_stages(state, splits)
            if not self.main:
                return RunOutcome(run_dir=self.run_dir, report={"status": "worker"})
            model = eval_mode(state.model)
            float_model = state.extras.get("float_model")
            quantizer = state.extras.get("quantizer")
            ref = predict(model, splits.validation.x, recipe.data.batch_size)
            float_ref = predict(float_model, splits.validation.x, recipe.data.batch_size) if quantizer else None
            health = reference_health(ref)
            if health["single_class"] and not health["constant"]:
                self.notes.append("the reference predicts one class for every validation sample: top-1 agreement "
                                  "is weak evidence; the error gates carry the weight")
            artifacts = self.export(model, spec, quantizer) if "export" in self.phases else {}
            op_check = self.check_ops(state, splits, artifacts) if recipe.check.enabled else None
            profiling = "profile" in self.phases and recipe.profile.enabled
            fp32_artifacts = (self.export(float_model, spec, subdir="artifacts/fp32")
                              if quantizer and profiling and recipe.profile.compare_fp32 and artifacts else {})
            pruned = any(s["type"] == "prune" for s in stages)
            baseline_artifacts = (self.export(state.extras["reference"], spec, subdir="artifacts/baseline")
                                  if pruned and profiling and recipe.profile.compare_baseline and artifacts else {})
            pytorch_latency = None
            if profiling:
                self.log("profile pytorch (eager fp32)")
                pytorch_latency = self.profile_pytorch(float_model if quantizer else model, spec)
            results = [self.measure(label, artifact, options, gated, splits, ref, float_ref, health,
                                    pytorch_latency, {name: twins[artifact.format] for name, twins in
                                                      (("fp32", fp32_artifacts), ("baseline", baseline_artifacts))
                                                      if artifact.format in twins})
                       for label, artifact, options, gated in self.targets_for(artifacts)]
        except BaseException:
            self.manifest.save(status="error")
            raise
        failed = [f"{r['target']}: {g['detail']}" for r in results if r.get("gated")
                  for g in r.get("gates", []) if not g["passed"]]
        report = {
            "schema_version": SCHEMA_VERSION,
            "name": recipe.name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "status": "pass" if not failed else "fail",
            "seed": recipe.seed,
            "threads": recipe.profile.threads,
            "host": host_info(),
            "versions": library_versions(),
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "model": {"source": recipe.model.source, "weights": recipe.model.weights,
                      "parameters": int(sum(p.numel() for p in model.parameters())),
                      "input_spec": spec.to_dict()},
            "data": {"validation": splits.validation.origin, "calibration": splits.calibration.origin,
                     "validation_samples": len(splits.validation), "labels": splits.validation.y is not None},
            "quantization": self.quantization_summary(state, artifacts, fp32_artifacts) if quantizer else None,
            "reference": {"kind": "PT2E quantized model (second reference: float model)" if quantizer
                          else "pytorch eager fp32", "health": health,
                          "accuracy": (float(np.mean(ref.argmax(1) == splits.validation.y))
                                       if splits.validation.y is not None else None)},
            "gate_config": self.gate_config(quantized=quantizer is not None).model_dump(),
            "stages": [{k: v for k, v in s.items() if k != "files"} for s in stages],
            "artifacts": {fmt: a.to_dict(self.run_dir) for fmt, a in artifacts.items()},
            "pytorch_latency": pytorch_latency,
            "results": results,
            "check": op_check,
            "failed_gates": failed,
            "notes": self.notes,
        }
        for path in write_report(self.run_dir, report):
            self.manifest.record_file(path)
        self.manifest.save(status="pass" if not failed else "fail")
        unsupported = sum(v["count"] for v in op_check["violations"]) if op_check else 0
        return RunOutcome(run_dir=self.run_dir, report=report, failed_gates=failed,
                          unsupported=unsupported if recipe.check.fail_on_unsupported else 0)
