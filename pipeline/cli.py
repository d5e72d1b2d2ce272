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

from pipeline.errors import EXIT_GATE, EXIT_INTERNAL, EXIT_OK, EdgeshipError

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
    return p


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
        return EXIT_GATE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
