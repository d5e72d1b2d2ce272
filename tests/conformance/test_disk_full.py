"""A full disk during export: exit 2 naming the folder, nothing half-written, the manifest not left 'running'.

Needs a small tmpfs, which root can mount here (CI runs as root); -m slow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conformance.cases import recipe_file


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "openvino"])
def test_a_full_disk_is_a_clear_error(tmp_path, small_disk, fmt):
    # resnet18's 45 MB of weights cannot fit in 12 MB; the run directory's own files do
    recipe = recipe_file(tmp_path, **{"model.source": "torchvision:resnet18", "stages": [],
                                      "model.input": {"shape": [1, 3, 64, 64], "num_classes": 10},
                                      "export.formats": [fmt]})
    run = small_disk / "run"
    proc = subprocess.run([sys.executable, "-m", "edgeship.cli", "export", str(recipe), "--out", str(run)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "needs about" in proc.stderr and str(run / "artifacts") in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((run / "manifest.json").read_text())["status"] == "error"
    assert not list(run.rglob(".edgeship-tmp-*")) and not list((run / "artifacts").glob("*"))
