"""One recipe -> one run directory: build, stages, exports, evaluation on each runtime, report.

``Runner.run`` reads as the steps of a run; the run directory and cache live in rundir.py, the measurements in
evaluation.py and the report's content in assemble.py.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from edgeship.calibration.splits import Splits, make_splits
from edgeship.core.artifact import Artifact, InputSpec
from edgeship.core.console import heartbeat
from edgeship.core.environment import library_versions
from edgeship.core.errors import ConfigError, DataError, ExportError, plain
from edgeship.core.graph import eval_mode
from edgeship.core.io import atomic_write_text, captured_output, deferred_signals, sha256_file
from edgeship.core.pt2 import output_step
from edgeship.core.signing import sign_digest
from edgeship.exporters import FORMATS, export_formats
from edgeship.exporters.base import ExportContext
from edgeship.exporters.failures import ExportFailure
from edgeship.inference import predict
from edgeship.metrics import ROUNDING_NOISE, allowed_count, reference_health, rounding_labels, top1_agreement
from edgeship.models import build_model, load_weights
from edgeship.prune.latency_table import TimingTarget
from edgeship.recipe import GateConfig, Recipe
from edgeship.runner.assemble import (
    assemble_report,
    carry_over,
    failed_gates,
    latency_predictions,
    timing_notes,
)
from edgeship.runner.evaluation import Evaluation, Evaluator, quantization_summary, rows_for
from edgeship.runner.probe import RuntimeProbe
from edgeship.runner.rundir import Manifest, hash_json, state_dict_hash
from edgeship.stage import ModelState, StageContext
from edgeship.stages import build_stage
from edgeship.training.trainer import CHECKPOINT, is_main_process

ALL_PHASES = ("export", "validate", "profile")
DEBUG_SAMPLES = 8  # validation samples whose every intermediate tensor the layer-wise divergence compares
# What torch says when an input's shape does not fit a layer ("size mismatch", "expected input[1, 3, 12, 16] to
# have 1 channels", "shapes cannot be multiplied", "Given groups=1, weight of size ...").
SHAPE_WORDS = re.compile(r"shape|size|channel|dimension|mat1|cannot be multiplied|expected input", re.IGNORECASE)


@dataclass
class RunOutcome:
    """Where the run went and whether it passes its gates."""

    run_dir: Path
    report: dict[str, Any]
    failed_gates: list[str] = field(default_factory=list)
    unsupported: int = 0  # violating op instances when check.fail_on_unsupported is set
    failed_exports: list[str] = field(default_factory=list)  # one line per format that could not be written

    @property
    def passed(self) -> bool:
        """True when every format was written and every gate of every gated row passed."""
        return not self.failed_gates and not self.failed_exports


class Runner:
    """Executes one recipe. ``log`` receives progress lines; ``resume`` reuses verified stages.

    ``model``: an in-memory ``nn.Module`` to start from instead of building ``recipe.model.source`` (it is
    copied, never changed).
    """

    def __init__(self, recipe: Recipe, run_dir: Path, *, resume: bool = False,
                 log: Callable[[str], None] = print, phases: tuple[str, ...] = ALL_PHASES,
                 model: torch.nn.Module | None = None, debug_rows: tuple[str, ...] | None = None) -> None:
        self.recipe = recipe
        self.run_dir = run_dir
        self.resume = resume
        # Under torchrun every rank runs the stages (training stages synchronise through DDP); only rank 0
        # writes files, exports, validates and reports.
        self.main = is_main_process()
        self.log = log if self.main else (lambda _m: None)
        self.phases = phases
        self.given_model = model
        # Layer-wise divergence for these row labels (() = every row), whatever the gates say (edgeship debug).
        self.debug_rows = debug_rows
        self.notes: list[str] = []
        self.export_failures: dict[str, ExportFailure] = {}  # formats of the main artifacts that failed
        self.manifest = Manifest(run_dir, recipe)
        self.evaluator = Evaluator(recipe, run_dir, self.log, phases)

    # -- the whole run -----------------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Execute the recipe end to end and write the report."""
        from edgeship.report import write_report

        started = time.perf_counter()
        recipe = self.recipe
        self.write_resolved_recipe()
        for note in recipe.deprecations:
            self.log(f"note: {note}")
            self.notes.append(note)
        try:
            spec = self.input_spec()
            model = self.build(spec)
            splits = self.data(spec)
            state, stages = self.run_stages(ModelState(model=model, spec=spec), splits)
            if not self.main:
                return RunOutcome(run_dir=self.run_dir, report={"status": "worker"})
            if (state.spec.mean, state.spec.std) != (spec.mean, spec.std):  # quantize.pixel_input: [0, 1] pixels
                splits, spec = splits.as_pixels(spec.mean, spec.std), state.spec
            model = eval_mode(state.model)
            reference, float_reference, health, rounding = self.references(state, splits)
            artifacts = self.export(model, spec, state.quantizer) if "export" in self.phases else {}
            op_check = self.check_ops(state, splits, artifacts) if recipe.check.enabled else None
            twins = self.export_twins(state, stages, artifacts)
            pytorch_latency = self.time_pytorch(state)
            gates = self.evaluator.gate_config(state.quantized, min((b.weight_bits for b in state.bits or ()),
                                                                    default=None), spec.num_classes)
            ev = Evaluation(splits, reference, float_reference, health, pytorch_latency, gates,
                            health.get("output_step", 0.0), rounding)
            results = []
            for row in rows_for(recipe, artifacts):
                with heartbeat(self.log, f"{'cross-check' if row.cross else 'validate/profile'} {row.label}"):
                    results.append(self.evaluator.measure(row, ev, {name: by_format[row.artifact.format]
                                                                    for name, by_format in twins.items()
                                                                    if row.artifact.format in by_format}))
            previous = self.previous_report()
            self.notes += carry_over(previous, results, artifacts, self.phases)
            for note in timing_notes(results):
                self.notes.append(note)
                self.log(f"note: {note}")
            latency_predictions(stages, results)
            if pytorch_latency is None and any("latency" in r for r in results):
                pytorch_latency = (previous or {}).get("pytorch_latency")
            matrix = self.cross_runtime(results, reference, gates)
            divergence = self.divergence(model, splits, artifacts, results, state.quantized)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (edgeship.cli.Terminated)
            with deferred_signals():  # a second signal must not leave the manifest saying "running"
                self.manifest.save(status="interrupted")
            raise
        except BaseException:
            with deferred_signals():
                self.manifest.save(status="error")
            raise
        report = assemble_report(
            recipe=recipe, started=started, model=model, model_source=recipe.model.source, spec=spec, splits=splits,
            health=health, quantized=state.quantized,
            quantization=(quantization_summary(state, artifacts, twins.get("fp32", {})) if state.quantized
                          else None),
            gate_config=gates, stages=stages, artifacts=artifacts,
            run_dir=self.run_dir, pytorch_latency=pytorch_latency, results=results, op_check=op_check,
            export_failures=self.export_failures, cross_runtime=matrix, divergence=divergence, notes=self.notes)
        for path in write_report(self.run_dir, report):
            self.manifest.record_file(path)
        self.manifest.save(status=report["status"])
        unsupported = sum(v["count"] for v in op_check["violations"]) if op_check else 0
        return RunOutcome(run_dir=self.run_dir, report=report, failed_gates=failed_gates(results),
                          unsupported=unsupported if recipe.check.fail_on_unsupported else 0,
                          failed_exports=report["failed_exports"])

    def previous_report(self) -> dict[str, Any] | None:
        """The ``report.json`` an earlier command left in this run directory (a partial command keeps its figures)."""
        import json

        try:
            return json.loads((self.run_dir / "report.json").read_text())
        except (OSError, ValueError):
            return None

    # -- setup -------------------------------------------------------------------------------------------------
    def write_resolved_recipe(self) -> None:
        """``recipe.resolved.yaml``: the recipe after defaults, overrides and renamed keys."""
        if self.main:
            path = self.run_dir / "recipe.resolved.yaml"
            atomic_write_text(path, yaml.safe_dump(self.recipe.dump(), sort_keys=False))
            self.manifest.record_file(path)
            self.manifest.save()

    def input_spec(self) -> InputSpec:
        """The recipe's input contract."""
        i = self.recipe.model.input
        return InputSpec(shape=tuple(i.shape), mean=tuple(i.mean), std=tuple(i.std), num_classes=i.num_classes)

    def build(self, spec: InputSpec) -> torch.nn.Module:
        """Build the model (or copy the given one), load weights, and prove the input shape and class count fit."""
        cfg = self.recipe.model
        torch.manual_seed(self.recipe.seed)
        model = copy.deepcopy(self.given_model) if self.given_model is not None else (
            build_model(cfg.source, spec.num_classes, self.recipe.search_path))
        if cfg.weights:
            load_weights(model, Path(cfg.weights))
        model.eval()
        try:
            with torch.inference_mode():
                out = model(torch.zeros(spec.shape))
        except Exception as e:
            first = plain(str(e), 1) or type(e).__name__
            if SHAPE_WORDS.search(str(e)):
                raise ConfigError(f"model.input.shape {list(spec.shape)} does not fit {cfg.source}: the forward "
                                  f"pass failed with {type(e).__name__}: {first}") from None
            # Not about shapes: blaming model.input.shape would send the user to the wrong place.
            raise ConfigError(f"model.source {cfg.source}: the forward pass on a zeros input of shape "
                              f"{list(spec.shape)} failed inside the model with {type(e).__name__}: {first}") from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape != (spec.batch, spec.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"model.input: {cfg.source} returns {shape} for input {list(spec.shape)}; expected "
                              f"logits of shape ({spec.batch}, {spec.num_classes}) (check model.input.num_classes)")
        return model

    def data(self, spec: InputSpec) -> Splits:
        """Load and split the recipe's data sources."""
        d = self.recipe.data
        splits = make_splits(d.calibration.source, d.validation.source, d.calibration.samples,
                             d.validation.samples, d.seed, spec.sample_shape, spec.mean, spec.std,
                             allow_fewer=d.allow_fewer_samples, control_samples=d.control_samples)
        for split in (splits.train, splits.validation):
            if split.y is not None and len(split.y) and (split.y.min() < 0 or split.y.max() >= spec.num_classes):
                raise DataError(f"{split.origin}: labels run from {int(split.y.min())} to {int(split.y.max())}, "
                                f"outside [0, {spec.num_classes}) (model.input.num_classes {spec.num_classes})")
        self.notes.extend(splits.notes)
        if d.validation.source.startswith("synthetic"):
            self.notes.append("validation data is synthetic noise: agreement on it is a smoke test, not evidence")
        self.log(f"data: validation {len(splits.validation)} samples ({splits.validation.origin}); "
                 f"calibration {len(splits.calibration)}; train {len(splits.train)}")
        return splits

    # -- stages ------------------------------------------------------------------------------------------------
    def model_key(self, state: ModelState) -> str:
        """The cache key of the model a run starts from: its source and weights, or an in-memory model's tensors."""
        cfg = self.recipe.model
        weights_hash = sha256_file(Path(cfg.weights)) if cfg.weights else None
        origin = state_dict_hash(state.model) if self.given_model is not None else cfg.source
        return hash_json({"source": origin, "weights": weights_hash, "spec": state.spec.to_dict(),
                          "seed": self.recipe.seed})

    def run_stages(self, state: ModelState, splits: Splits) -> tuple[ModelState, list[dict[str, Any]]]:
        """Run (or reuse, with --resume) each stage in order; return the final state and the stage records."""
        prev_key = self.model_key(state)
        data_key = [splits.train.fingerprint(), splits.calibration.fingerprint(), splits.validation.fingerprint()]
        stages = [build_stage(config) for config in self.recipe.stages]
        # The model before compression: distill's default teacher and the pruned run's timed baseline.
        needs_reference = any(s.needs_reference for s in stages)
        records = []
        # Accuracy control measures its candidates on the runtimes the run validates on (rank 0 only exports).
        probes = self.main and "export" in self.phases and self.evaluator.validating
        probe = RuntimeProbe(self.evaluator) if probes else None
        lat = self.recipe.latency
        timing = TimingTarget.of(self.evaluator.device, lat.threads, lat.warmup, lat.runs)
        for i, stage in enumerate(stages, start=1):
            key = hash_json({"stage": stage.config.model_dump(), "input": prev_key, "data": data_key,
                             "seed": self.recipe.seed, "versions": library_versions()})
            workdir = self.run_dir / "stages" / f"{i:02d}-{stage.name}"
            cached, why_not = self.manifest.reusable(key) if self.resume else (None, None)
            if why_not:
                self.notes.append(f"stage {i} {stage.name} recomputed on --resume: {why_not}")
                self.log(f"note: {self.notes[-1]}")
            ctx = StageContext(workdir=workdir, splits=splits, seed=self.recipe.seed, log=self.log,
                               resume=self.resume, fingerprint=key, probe=probe, timing=timing)
            if needs_reference and not stage.makes_input and state.reference is None:
                state.reference = copy.deepcopy(state.model).eval()
            if cached:
                state = stage.load(state, ctx)
                entry = {**cached, "reused": True}
                self.log(f"stage {i} {stage.name}: reused (inputs and config unchanged, files verified)")
            else:
                self.log(f"stage {i} {stage.name}: running")
                workdir.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                with heartbeat(self.log, f"stage {i} {stage.name}"):
                    result = stage.run(state, ctx)
                state = result.state
                eval_mode(state.model)
                files = stage.save(state, ctx) if self.main else []
                # Training checkpoints are the stage's files too: listed, hashed and signed like its output.
                files += sorted(p for p in workdir.rglob(CHECKPOINT) if p not in files) if self.main else []
                self.notes.extend(result.notes)
                digests = {str(f.relative_to(self.run_dir)): sha256_file(f) for f in files}
                entry = {"index": i, "type": stage.name, "key": key, "status": "done", "reused": False,
                         "seconds": round(time.perf_counter() - t0, 2), "config": stage.config.model_dump(),
                         "metrics": result.metrics, "files": digests,
                         "signatures": {rel: sign_digest(d) for rel, d in digests.items()}}
            self.manifest.data["files"].update(entry["files"])
            self.manifest.data["stages"].append(entry)
            self.manifest.save()
            state.history.append({"stage": stage.name, "metrics": entry["metrics"]})
            records.append(entry)
            prev_key = key
        return state, records

    # -- references, exports, twins ----------------------------------------------------------------------------
    def references(self, state: ModelState, splits: Splits) -> tuple[Any, Any, dict[str, Any], Any]:
        """The reference logits (PT2E model when quantized), the float model's (quantized runs), their health.

        Quantized runs also get ``rounding_labels``: the labels the PT2E model gives under rounding-sized input
        perturbations, which the agreement gate accepts like two logits one output step apart.
        """
        batch = self.recipe.data.batch_size
        reference = predict(state.model, splits.validation.x, batch)
        float_reference = predict(state.float_model, splits.validation.x, batch) if state.quantized else None
        labels = splits.validation.y
        health = reference_health(reference, output_step(state.model) if state.quantized else 0.0, labels)
        rounding = None
        if float_reference is not None:
            health["float"] = reference_health(float_reference, truth=labels)
            health["agreement_with_float"] = top1_agreement(reference, float_reference)
            rounding = rounding_labels(lambda x: predict(state.model, x, batch), splits.validation.x, reference)
            health["rounding_unstable_count"] = int((rounding.sum(1) > 1).sum())
        if health["single_class"] and not health["constant"]:
            self.notes.append("the reference predicts one class for every validation sample: top-1 agreement "
                              "is weak evidence; the error gates carry the weight")
        return reference, float_reference, health, rounding

    def export(self, model: torch.nn.Module, spec: InputSpec, quantizer: Any = None,
               subdir: str = "artifacts") -> dict[str, Artifact]:
        """Write every requested format under ``subdir``; each artifact appears only once complete."""
        exp = self.recipe.export
        ctx = ExportContext(out_dir=self.run_dir / subdir, log_dir=self.run_dir / "logs", quantizer=quantizer,
                            dynamic_batch=exp.dynamic_batch)
        where = "" if subdir == "artifacts" else f" ({subdir})"

        def done(artifact: Artifact) -> None:
            for f in artifact.files:
                self.manifest.record_file(f)
            fmt = artifact.format
            key = fmt if subdir == "artifacts" else f"{subdir.removeprefix('artifacts/')}/{fmt}"
            self.manifest.data["artifacts"][key] = artifact.to_dict(self.run_dir)
            self.manifest.save()
            self.log(f"export {fmt}{where}: {artifact.size_bytes / 1e6:.2f} MB in {artifact.export_seconds:.1f} s "
                     f"({artifact.converter})")

        def failed(failure: ExportFailure) -> None:
            self.log(f"export {failure.format}{where}: FAILED: {failure.summary}")
            if subdir == "artifacts":
                self.export_failures[failure.format] = failure
            else:  # a twin only times a comparison: the run goes on without it
                self.notes.append(f"the {subdir.removeprefix('artifacts/')} twin could not be exported to "
                                  f"{failure.format}, so that row has no speed-up against it: {failure.summary}")

        options = {name: getattr(exp, name) for name in FORMATS}
        with heartbeat(self.log, f"export{where}"):
            return export_formats(model, spec, ctx, exp.formats, options,
                                  on_start=lambda fmt: self.log(f"export {fmt}{where}: converting"), on_done=done,
                                  on_failed=failed)

    def check_ops(self, state: ModelState, splits: Splits, artifacts: dict[str, Artifact]) -> dict[str, Any] | None:
        """The op-support check; a graph torch.export cannot take (the converters failed on it too) skips it."""
        try:
            return self.evaluator.check_ops(state, splits, artifacts)
        except ExportError as e:  # the report must still say what happened to each format; exit 3 all the same
            self.notes.append(f"op-support check skipped: {e}")
            self.export_failures["check"] = ExportFailure("check", str(e), hint=plain(str(e), 2))
            return None

    def export_twins(self, state: ModelState, stages: list[dict[str, Any]],
                     artifacts: dict[str, Artifact]) -> dict[str, dict[str, Artifact]]:
        """The models every artifact is timed against on its own runtime, exported in the same formats.

        ``fp32``: the float model of a quantized run; ``baseline``: the model before a stage that changed layer
        shapes (pruning). Only when timing, and each only when ``latency.compare_*`` asks for it.
        """
        lat = self.recipe.latency
        if not (self.evaluator.timing and artifacts):
            return {}
        twins = {}
        if state.quantized and lat.compare_fp32:
            twins["fp32"] = self.export(state.float_model, state.spec, subdir="artifacts/fp32")
        from edgeship.stages import stage_class

        if lat.compare_baseline and any(stage_class(s["type"]).changes_shape for s in stages):
            twins["baseline"] = self.export(state.reference, state.spec, subdir="artifacts/baseline")
        return twins

    def cross_runtime(self, results: list[dict[str, Any]], reference: Any, gates: GateConfig) -> dict[str, Any] | None:
        """The agreement of every execution with every other, and the one that stands out (notes say who)."""
        from edgeship.crossruntime import cross_runtime_matrix

        outputs = self.evaluator.outputs
        if len(outputs) < 2:
            return None
        allowed = allowed_count(1 - gates.top1_agreement_min, len(reference))  # differing samples the gate allows
        matrix = cross_runtime_matrix(outputs, {r["runtime"]: r["format"] for r in results if r["runtime"] in outputs},
                                      reference, allowed)
        for finding in matrix["findings"]:
            self.notes.append(f"cross-runtime: {finding['detail']}")
            self.log(f"note: {self.notes[-1]}")
            # The row itself says it is the odd one out: a failure there is that runtime's (or that file's).
            named = finding.get("executions") or [finding.get("execution")]
            for r in results:
                if r["runtime"] in named:
                    r["cross_runtime_finding"] = finding["detail"]
        return matrix

    def divergence(self, model: torch.nn.Module, splits: Splits, artifacts: dict[str, Artifact],
                   results: list[dict[str, Any]], quantized: bool) -> dict[str, Any] | None:
        """Per runtime, each layer's SQNR against the reference and the first that diverges.

        Written when a gated row fails (for every row, so the healthy runtimes show what the failing one
        should look like) and for ``edgeship debug``.
        """
        from edgeship.divergence import (
            divergence_table,
            reference_floor,
            reference_graph,
            reference_tensors,
            runtime_tensors,
        )

        failed = any(r.get("gated") and r.get("status") == "fail" for r in results)
        if not self.evaluator.validating or not artifacts or not (failed or self.debug_rows is not None):
            return None
        self.log(f"divergence: intermediate tensors of {DEBUG_SAMPLES} samples, layer by layer")
        x = splits.validation.x[:DEBUG_SAMPLES]
        graph = reference_graph(model, x)  # exported once for both passes
        refs = reference_tensors(graph, x)
        floor = reference_floor(graph, x, refs)
        wanted = {r.name for r in refs}
        threshold = self.recipe.validate_.divergence_min_sqnr_db
        tables: dict[str, Any] = {}
        for row in rows_for(self.recipe, artifacts):
            if self.debug_rows and row.label not in self.debug_rows:
                continue
            try:
                with captured_output(self.run_dir / "logs" / "runtimes.log"):
                    tensors = runtime_tensors(row.runtime, row.artifact, x, wanted, self.run_dir / "logs")
            except Exception as e:  # a diagnostic: one runtime that cannot expose its tensors is reported
                tables[row.label] = {"error": f"{type(e).__name__}: {plain(str(e), 2)}"}
                continue
            table = divergence_table(refs, tensors, threshold, floor)
            tables[row.label] = table
            first = table["first_divergent"]
            self.log(f"divergence {row.label}: {table['matched']} layers matched; " + (
                f"first below {threshold:g} dB: {first['layer']} ({first['op']}, {first['sqnr_db']} dB; "
                f"reference floor {first.get('floor_db')} dB)"
                if first else f"none below {threshold:g} dB"))
        return {"samples": len(x), "reference": "PT2E model" if quantized else "PyTorch model",
                "min_sqnr_db": threshold, "floor_noise": ROUNDING_NOISE, "runtimes": tables}

    def time_pytorch(self, state: ModelState) -> dict[str, Any] | None:
        """PyTorch eager fp32 latency (the float model of a quantized run), when timing."""
        if not self.evaluator.timing:
            return None
        self.log("profile pytorch (eager fp32)")
        return self.evaluator.pytorch_latency(state.float_model if state.quantized else state.model, state.spec)
