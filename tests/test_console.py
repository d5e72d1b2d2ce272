"""The console in a CI log: full runtime names, the verdict on one stream, -v/-q/--json anywhere on the line."""

from __future__ import annotations

import json

from edgeship.cli import main
from tests.conftest import tiny_recipe, write_recipe


def test_without_a_terminal_the_summary_keeps_full_names_and_gates_beside_it(tmp_path, capsys):
    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path, **{
        "stages": [], "export.formats": ["onnx"], "latency.enabled": False, "check.enabled": False}))
    rc = main(["validate", str(recipe), "--out", str(tmp_path / "run"), "-v"])  # a global flag after the command
    captured = capsys.readouterr()
    assert rc == 4  # untrained: its accuracy is near chance
    assert "openvino(onnx)" in captured.out and "onnxrunt…" not in captured.out  # never cut at 80 columns
    assert "gate failed" in captured.out and "reference: reference accuracy" in captured.out  # same stream
    assert "onnxruntime: reference_accuracy_min FAIL" in captured.out  # -v: every gate
    assert "s] export onnx: converting" in captured.err  # progress on stderr, time-stamped in a log


def test_json_and_quiet_before_the_command_leave_only_json_on_stdout(tmp_path, capsys):
    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path, **{"stages": [], "export.formats": ["onnx"]}))
    rc = main(["--json", "-q", "export", str(recipe), "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert rc == 0 and summary["status"] == "exported" and summary["exit_code"] == 0
    assert summary["report"].endswith("report.html")
    assert summary["rows"] and all(r["top1_agreement"] is None for r in summary["rows"])  # nothing validated
    assert "export onnx" not in captured.err  # -q: no progress lines
