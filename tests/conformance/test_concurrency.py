"""Two runs into one directory: the second is refused naming the first's PID; the first is untouched (-m slow)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conformance.cases import recipe_file


@pytest.mark.slow
def test_two_concurrent_runs_into_one_directory(tmp_path):
    recipe = recipe_file(tmp_path, stages=[{"type": "train", "epochs": 30}])
    cmd = [sys.executable, "-m", "edgeship.cli", "export", str(recipe), "--out", str(tmp_path / "run")]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    assert first.stdout is not None
    for line in first.stdout:
        if "stage 1 train: running" in line:
            break
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert second.returncode == 2 and f"PID {first.pid}" in " ".join(second.stderr.split()), second.stderr
    rest, _ = first.communicate(timeout=600)
    assert first.returncode == 0, rest[-2000:]
    assert not list((tmp_path / "run").rglob(".edgeship-tmp-*"))
