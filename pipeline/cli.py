"""``edgeship`` command line.

Exit codes: 0 ok · 1 internal · 2 bad recipe/arguments · 3 unsupported ops · 4 validation gate failed ·
5 corrupt or untrusted input.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape  # user text (paths, module names) must never be read as console markup

from edgeship.core.errors import (
    EXIT_CONFIG,
    EXIT_GATE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_UNSUPPORTED,
    ConfigError,
    EdgeshipError,
    plain,
)

if TYPE_CHECKING:
    from rich.console import Console

    from edgeship.api import RunResult

PHASES = {
    "run": ("export", "validate", "profile"),
    "export": ("export",),
    "validate": ("export", "validate"),
    "profile": ("export", "profile"),
}


def demo_recipe() -> Path:
    """The embedded example ``edgeship demo`` runs: ``examples/digits.yaml``, shipped inside the package."""
    from importlib.resources import as_file, files

    with as_file(files("edgeship.examples") / "digits.yaml") as path:
        if path.is_file():
            return Path(path)
    raise EdgeshipError("the embedded example edgeship/examples/digits.yaml is missing from this installation; "
                        "reinstall edgeship, or `edgeship run` a recipe of your own")


def version_text() -> str:
    """Edgeship's version and those of torch, the converters and each registered runtime."""
    from edgeship import __version__
    from edgeship.core.environment import library_versions
    from edgeship.targets import RUNTIMES

    versions = library_versions()
    shown = ["torch", "torchvision", "onnx", "litert-torch", *(r.library for r in RUNTIMES.values())]
    return f"edgeship {__version__}\n" + "\n".join(f"  {name} {versions.get(name, 'missing')}"
                                                     for name in dict.fromkeys(shown))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeship", description=(
        "Ship a trained PyTorch model to ONNX, TFLite (LiteRT) and OpenVINO IR, with every artifact validated "
        "against the PyTorch reference on real data and profiled on its own runtime."),
        epilog="exit codes: 0 ok, 1 internal error, 2 bad recipe/arguments, 3 unsupported ops, "
               "4 validation gate failed, 5 corrupt or untrusted input")
    p.add_argument("--version", action="store_true", help="print the versions of edgeship, torch and the runtimes")
    _global(p, top=True)
    sub = p.add_subparsers(dest="command")
    helps = {"run": "stages, export, validate and profile (the whole recipe)",
             "export": "stages and export only", "validate": "stages, export and validation (no profiling)",
             "profile": "stages, export and profiling (no validation)"}
    for name, text in helps.items():
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("recipe", help="recipe YAML file")
        _common(s)
    d = sub.add_parser("demo", help="run the embedded digits example end to end")
    _common(d)
    g = sub.add_parser("debug", help="layer-wise divergence of a run's artifacts on each runtime",
                       description="Re-validate a run directory (stages reused) and compare every layer's output on "
                                   "each runtime with the PyTorch reference: SQNR, cosine, the first layer that "
                                   "diverges. Written into the run's report.json and report.html.")
    g.add_argument("run_dir", help="a directory an edgeship run wrote")
    g.add_argument("--runtime", action="append", default=[], help="a row of the report (litert, openvino(onnx), "
                                                                   "...); repeat for several (default: every row)")
    _global(g)
    t = sub.add_parser("latency-table", help="measure (or show the cached) latency lookup table of a recipe's model",
                       description="Profile pruned variants of the recipe's model on a runtime (on the recipe's "
                                   "device and threads), fit each layer's in-graph time against its kept channels, "
                                   "cache the table, and print it: what target_latency pruning decides with.")
    t.add_argument("recipe", help="recipe YAML file (its model, input, device, latency.threads, first prune stage)")
    t.add_argument("--runtime", required=True, help="onnxruntime | openvino | litert")
    t.add_argument("--samples", type=int, help="pruned variants to profile (default: the prune stage's, or 10)")
    t.add_argument("--rebuild", action="store_true", help="measure again even when the cache has the table")
    t.add_argument("--save", metavar="FILE", help="also write the table's summary as JSON to this file")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field (repeatable)")
    t.add_argument("--device", help="local, ssh://[user@]host[:port] or adb://SERIAL (the recipe's device.url)")
    _global(t)
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
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return p


def _global(p: argparse.ArgumentParser, top: bool = False) -> None:
    """Flags accepted before or after the subcommand (a subcommand's copy never resets the top-level one)."""
    default = {"default": False} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="store_true", help="also print the notes and every gate", **default)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines: only the verdict", **default)
    p.add_argument("--json", dest="json_summary", action="store_true", **default,
                   help="print a machine-readable summary on stdout (the table goes to stderr)")
    p.add_argument("--debug", action="store_true", help="show tracebacks", **default)


def _run_check(args: argparse.Namespace, console: Console) -> int:
    from edgeship.api import check
    from edgeship.opcheck import render

    try:
        shape = [int(v) for v in args.input_shape.split(",")]
    except ValueError:
        raise ConfigError(f"--input-shape expects four positive integers N,C,H,W; got {args.input_shape!r}") from None
    report = check(args.model, profile=args.profile, input_shape=shape, num_classes=args.num_classes)
    _output(args).print(render(report))
    if args.json_summary:
        print(json.dumps(report.to_dict(), indent=2))
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    if args.json:
        from edgeship.core.io import atomic_write_json

        atomic_write_json(Path(args.json), report.to_dict())
    if report.passed:
        return EXIT_OK
    console.print(f"[bold red]unsupported[/]: {report.count()} op instances violate the "
                  f"{escape(report.profile)} profile ({json.dumps({lv: report.count(lv) for lv in report.ops_seen})})",
                  soft_wrap=True)
    return EXIT_OK if args.warn_only else EXIT_UNSUPPORTED


def _run_latency_table(args: argparse.Namespace, console: Console) -> int:
    from edgeship.api import latency_table
    from edgeship.report import latency_table_text

    overrides = args.overrides + ([f"device.url={args.device}"] if args.device else [])
    summary = latency_table(args.recipe, runtime=args.runtime, overrides=overrides, rebuild=args.rebuild,
                            samples=args.samples, log=(lambda _m: None) if args.quiet else
                            (lambda m: console.print(escape(m), highlight=False)))
    _output(args).print(latency_table_text(summary))
    if args.json_summary:
        print(json.dumps(summary, indent=2))
    if args.save:
        from edgeship.core.io import atomic_write_json

        atomic_write_json(Path(args.save), summary)
    return EXIT_OK


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set profile.threads=4 (repeatable)")
    s.add_argument("--out", help="run directory (default: <output_dir>/<name> from the recipe)")
    s.add_argument("--resume", action="store_true", help="reuse stages whose inputs and config are unchanged")
    s.add_argument("--device", help="run the runtimes on this device: local, ssh://[user@]host[:port] or adb://SERIAL "
                                    "(the recipe's device.url)")
    _global(s)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgeship`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        print(version_text())
        return EXIT_OK
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("edgeship: error: a command is required (run, export, validate, profile, check, debug, "
              "latency-table, demo)", file=sys.stderr)
        return EXIT_CONFIG
    from edgeship.core.console import progress_console

    console = progress_console()
    warnings.simplefilter("ignore")  # library deprecation chatter; our own notes go into the report
    previous = signal.signal(signal.SIGTERM, _terminated)  # a CI cancel: clean up like Ctrl-C
    try:
        return _execute(args, console)
    except EdgeshipError as e:
        if args.debug:
            traceback.print_exc()
        console.print(f"[bold red]error[/]: {escape(str(e))}", soft_wrap=True)
        return e.exit_code
    except OSError as e:  # disk full, read-only or missing folder, permission: the user's environment, not a bug
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        console.print(f"[bold red]error[/]: {escape(where + (e.strerror or str(e)))}", soft_wrap=True)
        return EXIT_CONFIG
    except Terminated:
        console.print("[red]terminated[/] (SIGTERM)")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return EXIT_INTERRUPTED
    except Exception as e:
        traceback.print_exc() if args.debug else None
        console.print(f"[bold red]internal error[/]: {escape(f'{type(e).__name__}: {plain(str(e), 3)}')}\n"
                      "This is a bug in edgeship (or a library it drives); rerun with --debug for the traceback.",
                      soft_wrap=True)
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so the run cleans up and records it exactly as for Ctrl-C."""


def _terminated(_signum: int, _frame: object) -> None:
    raise Terminated


def _execute(args: argparse.Namespace, console: Console) -> int:
    from edgeship.api import load_recipe, run
    from edgeship.core.console import elapsed, interactive
    from edgeship.training.trainer import is_main_process

    if args.command == "check":
        return _run_check(args, console)
    if args.command == "latency-table":
        return _run_latency_table(args, console)

    def log(m: str) -> None:
        if not args.quiet:  # a log has no live bars: each line says how long the run has taken
            console.print(f"  {escape(m)}" if interactive() else f"{elapsed()} {escape(m)}", highlight=False)

    if args.command == "debug":
        from edgeship.api import debug
        from edgeship.report import divergence_summary

        console.print(f"[bold]edgeship debug[/] {escape(args.run_dir)}")
        result = debug(args.run_dir, runtimes=args.runtime, log=log)
        _output(args).print(divergence_summary(result.report))
        return _verdict(result, args, (result.report.get("check") or {}).get("profile", ""))
    recipe_path = demo_recipe() if args.command == "demo" else Path(args.recipe)
    recipe = load_recipe(recipe_path, args.overrides + ([f"device.url={args.device}"] if args.device else []))
    _quiet_torch_loggers()
    out = args.out or Path(recipe.output_dir) / recipe.name
    if is_main_process() and not args.quiet:
        console.print(f"[bold]edgeship[/] {escape(f'{recipe_path} -> {out}')}")
    result = run(recipe, out=out, resume=args.resume, phases=PHASES.get(args.command, PHASES["run"]), log=log)
    if result.report.get("status") == "worker":  # a torchrun worker: rank 0 reports
        return EXIT_OK
    return _verdict(result, args, recipe.check.profile)


def _quiet_torch_loggers() -> None:
    """Keep torch's own loggers to errors: their deprecation chatter bypasses our console.

    torchao's ``register_constant`` warning printed on every quantized run. Set after torch is imported, which
    configures these loggers.
    """
    import logging

    import torch  # noqa: F401 - its import sets up the loggers this quiets

    logging.getLogger("torch").setLevel(logging.ERROR)


def _output(args: argparse.Namespace) -> Console:
    """Where the verdict goes: stdout (stderr under --json, which owns stdout); wide and plain without a terminal."""
    from rich.console import Console

    from edgeship.core.console import WIDE

    stream = sys.stderr if args.json_summary else sys.stdout
    return Console(file=stream, highlight=False, width=None if stream.isatty() else WIDE)


def _verdict(result: RunResult, args: argparse.Namespace, profile: str) -> int:
    """Print the summary and what failed, all on one stream; return the exit code (exports/ops 3, gates 4)."""
    from edgeship.report import summary_table

    # A format that could not be written (the others were still validated), or ops the device cannot run at all,
    # outrank a gate verdict.
    code = (EXIT_UNSUPPORTED if result.failed_exports or result.unsupported
            else EXIT_GATE if result.failed_gates else EXIT_OK)
    out = _output(args)
    if not (args.json_summary and args.quiet):
        out.print(summary_table(result.report))
        out.print(escape(f"report: {result.report_path}  ({result.run_dir / 'report.json'})"), soft_wrap=True)
        if result.failed_gates:
            out.print("[bold red]gate failed[/]:\n  " + escape("\n  ".join(result.failed_gates)), soft_wrap=True)
        if result.failed_exports:
            out.print("[bold red]export failed[/]:\n  " + escape("\n  ".join(result.failed_exports)),
                      soft_wrap=True)
        if result.unsupported:
            out.print(f"[bold red]unsupported[/]: {result.unsupported} op instances violate the "
                      f"{escape(profile)} profile (check.fail_on_unsupported); see the report", soft_wrap=True)
        if args.verbose:
            for note in result.report.get("notes", []):
                out.print(f"note: {escape(note)}", soft_wrap=True)
            for r in result.report.get("results", []):
                for g in r.get("gates", []) if r.get("gated") else []:
                    out.print(escape(f"{r['runtime']}: {g['gate']} {'pass' if g['passed'] else 'FAIL'}: "
                                     f"{g['detail']}"), soft_wrap=True)
    if args.json_summary:
        print(json.dumps(json_summary(result, code), indent=2))
    return code


def json_summary(result: RunResult, code: int) -> dict[str, Any]:
    """``--json``: the verdict a CI job reads (the full record is report.json)."""
    report = result.report
    return {"status": report["status"], "exit_code": code, "name": report.get("name"),
            "run_dir": str(result.run_dir), "report": str(result.report_path),
            "failed_gates": result.failed_gates, "failed_exports": result.failed_exports,
            "reference_accuracy": (report.get("reference") or {}).get("accuracy"),
            "rows": [{"runtime": r["runtime"], "precision": r.get("precision"), "status": r.get("status"),
                      "gated": r.get("gated"), "top1_agreement": r.get("metrics", {}).get("top1_agreement"),
                      "rel_max_err": r.get("metrics", {}).get("rel_max_err"),
                      "p50_ms": r.get("latency", {}).get("p50"), "speedup_vs_pytorch": r.get("speedup_vs_pytorch")}
                     for r in report.get("results", [])]}


if __name__ == "__main__":
    sys.exit(main())
