"""Helpers shared by benchmark scripts: run a recipe dict through the real runner, write JSON + markdown."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import edgeship
from edgeship.core.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def run_recipe(recipe: dict[str, Any], out: Path, quiet: bool = True) -> dict[str, Any]:
    """Execute ``recipe`` with edgeship's runner and return its report."""
    return edgeship.run(recipe, out=out, log=(lambda m: None) if quiet else print).report


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
