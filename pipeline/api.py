"""The Python API: what ``edgeship run`` and ``edgeship check`` do, callable from a script or a notebook.

    import edgeship
    result = edgeship.run("recipe.yaml", out="runs/x", overrides=["latency.threads=4"])
    result.passed, result.status, result.results["onnxruntime"]["metrics"]["top1_agreement"]

The CLI is a thin layer over these functions; errors are ``edgeship.EdgeshipError`` subclasses whose
``exit_code`` is the CLI's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.core.artifact import Artifact

if TYPE_CHECKING:
    from torch import nn

    from edgeship.opcheck import CheckReport
    from edgeship.recipe import Recipe


@dataclass(frozen=True)
class RunResult:
    """What one run produced: the verdict, every runtime's row, the artifacts and where the report is."""

    run_dir: Path
    report: dict[str, Any]
    failed_gates: list[str]
    unsupported: int  # violating op instances when check.fail_on_unsupported is set (the CLI exits 3)
    failed_exports: list[str] = field(default_factory=list)  # one line per format not written (the CLI exits 3)

    @property
    def status(self) -> str:
        """``pass`` or ``fail`` (every gate of every gated runtime row), as in report.json."""
        return self.report["status"]

    @property
    def passed(self) -> bool:
        """True when every format was written, every gate passed and no op violates a binding profile."""
        return not self.failed_gates and not self.unsupported and not self.failed_exports

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """One row per runtime (``onnxruntime``, ``litert``, ``openvino``, ``openvino@default``, ...)."""
        return {r["runtime"]: r for r in self.report["results"]}

    @property
    def artifacts(self) -> dict[str, Artifact]:
        """The exported artifacts by format (paths absolute)."""
        return {fmt: Artifact.from_dict(a, self.run_dir) for fmt, a in self.report["artifacts"].items()}

    @property
    def report_path(self) -> Path:
        """``report.html``: the page to read (``report.json`` beside it)."""
        return self.run_dir / "report.html"


def load_recipe(recipe: str | Path | dict[str, Any] | Recipe, overrides: Sequence[str] = ()) -> Recipe:
    """A validated ``Recipe`` from a YAML path, a dict of the same shape, or a ``Recipe`` (``overrides`` applied).

    ``overrides`` are ``key=value`` strings as ``--set`` takes them (``latency.threads=4``, ``stages.0.epochs=1``).
    """
    from edgeship.recipe import Recipe, apply_override, load_recipe_file, parse_recipe

    if isinstance(recipe, Recipe):
        if not overrides:
            return recipe
        overridden = load_recipe(recipe.dump(), overrides)
        overridden._search_path = recipe.search_path  # still the recipe file's folder first
        return overridden
    if isinstance(recipe, dict):
        data = copy.deepcopy(recipe)
        for o in overrides:
            apply_override(data, o)
        return parse_recipe(data, "<recipe dict>")
    return load_recipe_file(recipe, list(overrides))


def run(recipe: str | Path | dict[str, Any] | Recipe, *, out: str | Path | None = None,
        overrides: Sequence[str] = (), model: nn.Module | None = None, resume: bool = False,
        phases: Sequence[str] = ("export", "validate", "profile"),
        log: Callable[[str], None] = lambda _m: None) -> RunResult:
    """Run a recipe end to end (stages, export, validation and latency on each runtime) and write its report.

    ``model``: start from this in-memory module instead of building ``model.source`` (it is copied, never
    changed; a dict recipe may then leave ``model.source`` out). ``out``: the run directory (default
    ``<output_dir>/<name>``). ``phases``: a subset of export/validate/profile (export is always needed for the
    other two). ``log`` receives the progress lines the CLI prints.
    """
    from edgeship.runner import Runner, prepare_run_dir
    from edgeship.runner.rundir import locked

    if model is not None and isinstance(recipe, dict) and "source" not in recipe.get("model", {}):
        recipe = {**recipe, "model": {**recipe.get("model", {}), "source": _describe(model)}}
    parsed = load_recipe(recipe, overrides)
    run_dir = prepare_run_dir(parsed, out)
    with locked(run_dir):
        outcome = Runner(parsed, run_dir, resume=resume, log=log, phases=tuple(phases), model=model).run()
    return RunResult(run_dir=run_dir, report=outcome.report, failed_gates=outcome.failed_gates,
                     unsupported=outcome.unsupported, failed_exports=outcome.failed_exports)


def debug(run_dir: str | Path, *, runtimes: Sequence[str] = (),
          log: Callable[[str], None] = lambda _m: None) -> RunResult:
    """Re-validate a run directory and tabulate every layer's divergence on each runtime.

    ``runtimes``: row labels such as ``litert`` or ``openvino(onnx)`` (empty: every row). Stages are reused as
    ``--resume`` reuses them; ``report.json`` gains the ``divergence`` section.
    """
    from edgeship.core.errors import ConfigError
    from edgeship.runner import Runner
    from edgeship.runner.rundir import locked
    from edgeship.targets import parse_runtime

    run_dir = Path(run_dir)
    resolved = run_dir / "recipe.resolved.yaml"
    if not resolved.is_file():
        raise ConfigError(f"{run_dir}: not an edgeship run directory (no recipe.resolved.yaml); pass the directory "
                          "a run wrote")
    for label in runtimes:
        parse_runtime(label.split("(")[0])  # unknown names fail here, before any work
    parsed = load_recipe(resolved)
    with locked(run_dir):
        outcome = Runner(parsed, run_dir, resume=True, log=log, phases=("export", "validate"),
                         debug_rows=tuple(runtimes)).run()
    return RunResult(run_dir=run_dir, report=outcome.report, failed_gates=outcome.failed_gates,
                     unsupported=outcome.unsupported, failed_exports=outcome.failed_exports)


def latency_table(recipe: str | Path | dict[str, Any] | Recipe, *, runtime: str, overrides: Sequence[str] = (),
                  rebuild: bool = False, samples: int | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """The latency lookup table of the recipe's model on ``runtime`` (on the recipe's device and threads).

    Read from the cache, or measured there first (``rebuild``: always). The table depends on the architecture,
    not the weights, so the model is built as the recipe builds it and no stage runs; the first prune stage's
    ``round_to``, ``protect`` and ``latency_table`` settings are used. Returns the table's summary: each
    layer's predicted time, the measured variants and how well the fit reproduces them.
    """
    import tempfile

    from edgeship.core.errors import ConfigError
    from edgeship.prune.config import PruneConfig
    from edgeship.prune.latency_table import TABLE_FORMAT, TimingTarget, measure_table, model_key, model_layers
    from edgeship.runner import Runner
    from edgeship.stages.prune import ignored_modules

    if runtime not in TABLE_FORMAT:
        raise ConfigError(f"--runtime: expected one of {', '.join(TABLE_FORMAT)}; got {runtime!r}")
    recipe = load_recipe(recipe, overrides)
    prune = next((s for s in recipe.stages if isinstance(s, PruneConfig)), None)
    prune = prune or PruneConfig(type="prune", target_latency=0.5)
    opts = prune.latency_table.model_copy(update={"samples": samples} if samples else {})
    with tempfile.TemporaryDirectory(prefix="edgeship-latency-table-") as tmp:
        runner = Runner(recipe, Path(tmp), log=log)
        spec = runner.input_spec()
        model = runner.build(spec).eval()
        lat = recipe.latency
        timing = TimingTarget.of(runner.evaluator.device, lat.threads, lat.warmup, lat.runs)
        table = timing.table(runtime, rebuild)
        layers = model_layers(model, spec)
        key = model_key(layers, spec)
        if not table.knows(key):
            log(f"measuring {opts.samples} variants x {opts.repeats} of {recipe.model.source} on {runtime} "
                f"({timing.device}, {timing.threads} threads)")
            measure_table(table, model, spec, ignored_modules(model, prune), timing, samples=opts.samples,
                          round_to=prune.round_to or 1, repeats=opts.repeats, seed=recipe.seed, workdir=Path(tmp),
                          log=log)
            table.save()
        return {"path": str(table.path), "model": recipe.model.source, **table.summary(key, layers)}


def _describe(model: nn.Module) -> str:
    """How an in-memory model is named in the report (``python:<module>.<class>``)."""
    cls = type(model)
    return f"python:{cls.__module__}.{cls.__qualname__}"


def check(model: str | Path | nn.Module, *, profile: str | Path = "int8-npu",
          input_shape: Sequence[int] = (1, 3, 224, 224), num_classes: int = 1000) -> CheckReport:
    """Lint a model or an artifact against an op-support profile: every violation, in one pass.

    ``model``: an artifact (``.onnx``, ``.tflite``, OpenVINO ``.xml``), a recipe (``.yaml``: the model as built,
    plus the run's artifacts if it ran), a model source (``torchvision:resnet18``, ``package.module:factory``,
    ``file.py:factory``) or an ``nn.Module``. ``input_shape``/``num_classes`` build a source or trace a module.
    """
    import torch

    from edgeship.opcheck import check as lint_all
    from edgeship.targets.profile import load_profile

    op_profile = load_profile(profile)
    if isinstance(model, torch.nn.Module):
        return lint_all(op_profile, model.eval(), torch.zeros(tuple(input_shape)), {})
    module, example, artifacts = _check_inputs(str(model), input_shape, num_classes)
    return lint_all(op_profile, module, example, artifacts)


def _check_inputs(model: str, input_shape: Sequence[int], num_classes: int) -> tuple[Any, Any, dict[str, Path]]:
    """(model, example input, artifact paths) that ``check`` lints, from whatever ``model`` names."""
    import torch

    from edgeship.core.errors import ConfigError
    from edgeship.exporters import FORMATS, format_of_file

    path = Path(model)
    fmt = format_of_file(path)
    if fmt is not None:
        return None, None, {fmt.name: path}
    if path.suffix.lower() == ".pt2":
        from edgeship.core.pt2 import load_exported_program

        program = load_exported_program(path)
        return program.module(), program.example_inputs[0][0], {}
    if path.suffix.lower() in (".yaml", ".yml"):
        from edgeship.runner import Runner

        recipe = load_recipe(path)
        run_dir = Path(recipe.output_dir) / recipe.name
        runner = Runner(recipe, run_dir, log=lambda _m: None)
        spec = runner.input_spec()
        found = {name: run_dir / "artifacts" / f.artifact for name, f in FORMATS.items()
                 if (run_dir / "artifacts" / f.artifact).is_file()}
        return runner.build(spec), torch.zeros(spec.shape), found
    from edgeship.models import build_model

    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ConfigError(f"input shape expects four positive integers N,C,H,W; got {list(input_shape)}")
    return build_model(model, num_classes).eval(), torch.zeros(shape), {}
