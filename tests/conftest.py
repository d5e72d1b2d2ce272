"""Shared fixtures: seeded, CPU-only, TF32 off, everything written under tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _signing_key(tmp_path_factory) -> None:
    """The suite signs with a key of its own (subprocesses inherit it), never the user's."""
    import os

    os.environ["EDGESHIP_KEY_FILE"] = str(tmp_path_factory.mktemp("key") / "run-key")


@pytest.fixture(autouse=True)
def _determinism() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds libraries that still use the legacy global RNG
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def tiny_recipe(tmp_path: Path, **overrides: object) -> dict:
    """A fast recipe: the digits CNN at a non-square 12x16 input (catches layout bugs), brief training."""
    recipe = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "model": {"source": "edgeship.zoo:digits_cnn",
                  "input": {"shape": [1, 1, 12, 16], "mean": [0.5], "std": [0.5], "num_classes": 10}},
        "data": {"calibration": {"source": "digits", "samples": 64}, "validation": {"source": "digits", "samples": 96}},
        "stages": [{"type": "train", "epochs": 3, "lr": 0.01}],
        "latency": {"threads": 1, "warmup": 1, "runs": 10},
    }
    for key, value in overrides.items():
        node = recipe
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return recipe


def load_report(run_dir: Path) -> dict:
    """The ``report.json`` of a run directory."""
    import json

    return json.loads((run_dir / "report.json").read_text())


def gated_results(run_dir: Path) -> dict[str, dict]:
    """The gated result rows of a run, by runtime; all three runtimes must be there."""
    rows = {r["runtime"]: r for r in load_report(run_dir)["results"] if r["gated"]}
    assert set(rows) == {"onnxruntime", "litert", "openvino"}
    return rows


def write_recipe(tmp_path: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    """Dump ``recipe`` to a YAML file under ``tmp_path``."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path
