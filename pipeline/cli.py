"""``edgeship`` command line.

Exit codes: 0 ok · 1 internal · 2 bad recipe/arguments · 3 unsupported ops · 4 validation gate failed ·
5 corrupt or untrusted input.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path

from pipeline.errors import EXIT_GATE, EXIT_INTERNAL, EXIT_OK, EXIT_UNSUPPORTED, ConfigError, EdgeshipError

PHASES = {
    "run": ("export", "validate", "profile"),
    "export": ("export",),
    "validate": ("export", "validate"),
    "profile": ("export", "profile"),
}


def demo_recipe() -> Path:
    """The embedded example ``make demo`` runs: ``examples/digits.yaml`` of this checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        p = base / "examples" / "digits.yaml"
        if p.is_file():
            return p
    raise EdgeshipError("examples/digits.yaml not found: run `edgeship demo` from an edgeship checkout, "
                        "or `edgeship run` with a recipe of your own")


def _parser() -> argparse.ArgumentParser:
    from pipeline import __version__

    p = argparse.ArgumentParser(prog="edgeship", description=(
        "Ship a trained PyTorch model to ONNX, TFLite (LiteRT) and OpenVINO IR, with every artifact validated "
        "against the PyTorch reference on real data and profiled on its own runtime."),
        epilog="exit codes: 0 ok, 1 internal error, 2 bad recipe/arguments, 3 unsupported ops, "
               "4 validation gate failed, 5 corrupt or untrusted input")
    p.add_argument("--version", action="version", version=f"edgeship {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    helps = {"run": "stages, export, validate and profile (the whole recipe)",
             "export": "stages and export only", "validate": "stages, export and validation (no profiling)",
             "profile": "stages, export and profiling (no validation)"}
    for name, text in helps.items():
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("recipe", help="recipe YAML file")
        _common(s)
    d = sub.add_parser("demo", help="run the embedded digits example end to end")
    _common(d)
    c = sub.add_parser("check", help="lint a model or artifact against an op-support profile (exit 3 if violated)",
                       description="List every op a target cannot run, with a reason and a count per op, in one pass.")
    c.add_argument("model", help="an artifact (.onnx, .tflite, OpenVINO .xml), an exported program (.pt2), a recipe "
                                 "(.yaml: the model as built, plus the run's artifacts if it ran), or a model source "
                                 "(torchvision:<name>, package.module:factory, file.py:factory)")
    c.add_argument("--profile", default="int8-npu", help="archnet | int8-npu | cpu, or a profile YAML path")
    c.add_argument("--input-shape", default="1,3,224,224", help="NCHW input for a model source (default 1,3,224,224)")
    c.add_argument("--num-classes", type=int, default=1000, help="classes for a model source (default 1000)")
    c.add_argument("--json", help="also write the result as JSON to this file")
    c.add_argument("--warn-only", action="store_true", help="exit 0 even when the profile is violated")
    c.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _check_inputs(args: argparse.Namespace) -> tuple[object, object, dict[str, Path]]:
    """(model, example input, artifact paths) that ``edgeship check`` lints, from whatever MODEL names."""
    import torch

    from targets.oplist import ARTIFACT_READERS

    path = Path(args.model)
    if path.suffix.lower() in ARTIFACT_READERS:
        fmt = {".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino"}[path.suffix.lower()]
        return None, None, {fmt: path}
    if path.suffix.lower() == ".pt2":
        if not path.is_file():
            raise ConfigError(f"{path}: file not found")
        program = torch.export.load(str(path))
        return program.module(), program.example_inputs[0][0], {}
    if path.suffix.lower() in (".yaml", ".yml"):
        from pipeline.recipe import load_recipe
        from pipeline.runner import Runner

        recipe = load_recipe(path)
        run_dir = Path(recipe.output_dir) / recipe.name
        runner = Runner(recipe, run_dir, log=lambda _m: None)
        spec = runner.input_spec()
        files = {"onnx": "model.onnx", "tflite": "model.tflite", "openvino": "openvino/model.xml"}
        found = {f: run_dir / "artifacts" / n for f, n in files.items() if (run_dir / "artifacts" / n).is_file()}
        return runner.build(spec), torch.zeros(spec.shape), found
    from pipeline.models import build_model

    try:
        shape = [int(v) for v in args.input_shape.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 4 or min(shape) < 1:
        raise ConfigError(f"--input-shape expects four positive integers N,C,H,W; got {args.input_shape!r}")
    return build_model(args.model, args.num_classes).eval(), torch.zeros(shape), {}


def _run_check(args: argparse.Namespace, console: object) -> int:
    import json

    from rich.console import Console

    from pipeline.check import check, render
    from targets.profile import load_profile

    assert isinstance(console, Console)
    profile = load_profile(args.profile)
    model, example, artifacts = _check_inputs(args)
    report = check(profile, model, example, artifacts)
    Console().print(render(report))
    for note in report.notes:
        console.print(f"note: {note}")
    if args.json:
        from pipeline._io import atomic_write_json

        atomic_write_json(Path(args.json), report.to_dict())
    if report.passed:
        return EXIT_OK
    console.print(f"[bold red]unsupported[/]: {report.count()} op instances violate the {profile.name} profile "
                  f"({json.dumps({lv: report.count(lv) for lv in report.ops_seen})})", soft_wrap=True)
    return EXIT_OK if args.warn_only else EXIT_UNSUPPORTED


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set profile.threads=4 (repeatable)")
    s.add_argument("--out", help="run directory (default: <output_dir>/<name> from the recipe)")
    s.add_argument("--resume", action="store_true", help="reuse stages whose inputs and config are unchanged")
    s.add_argument("--debug", action="store_true", help="show tracebacks")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgeship`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    warnings.simplefilter("ignore")  # library deprecation chatter; our own notes go into the report
    try:
        return _execute(args, console)
    except EdgeshipError as e:
        if args.debug:
            traceback.print_exc()
        console.print(f"[bold red]error[/]: {e}", markup=True, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    except Exception as e:
        traceback.print_exc() if args.debug else None
        console.print(f"[bold red]internal error[/]: {type(e).__name__}: {e}\n"
                      "This is a bug in edgeship (or a library it drives); rerun with --debug for the traceback.",
                      soft_wrap=True)
        return EXIT_INTERNAL


def _execute(args: argparse.Namespace, console: object) -> int:
    from rich.console import Console

    from pipeline.recipe import load_recipe
    from pipeline.report import summary_table
    from pipeline.runner import Runner, prepare_run_dir

    assert isinstance(console, Console)
    if args.command == "check":
        return _run_check(args, console)
    recipe_path = demo_recipe() if args.command == "demo" else Path(args.recipe)
    recipe = load_recipe(recipe_path, args.overrides)
    run_dir = prepare_run_dir(recipe, args.out)
    from pipeline.trainer import is_main_process

    if is_main_process():
        console.print(f"[bold]edgeship[/] {recipe_path} -> {run_dir}")
    runner = Runner(recipe, run_dir, resume=args.resume, log=lambda m: console.print(f"  {m}", highlight=False),
                    phases=PHASES.get(args.command, PHASES["run"]))
    outcome = runner.run()
    if not runner.main:  # a torchrun worker: rank 0 reports
        return EXIT_OK
    Console().print(summary_table(outcome.report))
    console.print(f"report: {run_dir / 'report.html'}  ({run_dir / 'report.json'})")
    if not outcome.passed:
        console.print("[bold red]gate failed[/]:\n  " + "\n  ".join(outcome.failed_gates), soft_wrap=True)
    if outcome.unsupported:  # the device cannot run it at all: that outranks a gate verdict
        console.print(f"[bold red]unsupported[/]: {outcome.unsupported} op instances violate the "
                      f"{recipe.check.profile} profile (check.fail_on_unsupported); see the report", soft_wrap=True)
        return EXIT_UNSUPPORTED
    return EXIT_OK if outcome.passed else EXIT_GATE


if __name__ == "__main__":
    sys.exit(main())
