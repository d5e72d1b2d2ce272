"""Helpers shared by benchmark scripts: run a recipe dict through the real runner, write JSON + markdown."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from pipeline._io import atomic_write_json, atomic_write_text
from pipeline.recipe import parse_recipe
from pipeline.runner import Runner, prepare_run_dir

RESULTS = Path(__file__).resolve().parent / "results"


def run_recipe(recipe: dict[str, Any], out: Path, quiet: bool = True) -> dict[str, Any]:
    """Execute ``recipe`` with edgeship's runner and return its report."""
    parsed = parse_recipe(recipe, f"benchmark:{recipe.get('name')}")
    run_dir = prepare_run_dir(parsed, out)
    return Runner(parsed, run_dir, log=(lambda m: None) if quiet else print).run().report


def median(values: list[float]) -> float:
    """Median of the non-empty list ``values``."""
    return float(statistics.median(values))


def write_results(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    jp, mp = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    atomic_write_json(jp, payload)
    atomic_write_text(mp, markdown)
    return jp, mp


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def dumps(obj: Any) -> str:
    """Stable JSON text."""
    return json.dumps(obj, indent=2, sort_keys=True)
