"""A converter failure on one format: the other formats are still written, validated and reported (exit 3)."""

from __future__ import annotations

import json

from edgeship.cli import main
from tests.conftest import tiny_recipe, write_recipe


def test_a_format_that_fails_to_convert_leaves_the_others_validated(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"model.source": "tests.models:bucketize_cnn", "stages": [],
                                      "latency.enabled": False, "check.enabled": False,
                                      "validate.gates.reference_accuracy_min": None})  # untrained on purpose
    rc = main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rc == 3 and report["status"] == "fail"
    failed = report["exports"]["tflite"]
    assert failed["status"] == "failed" and failed["op"] == "aten.bucketize.Tensor"
    assert failed["modules"] == ["1.1"] and "lowering" in failed["hint"]
    assert report["failed_exports"] == [
        "tflite: conversion failed at aten.bucketize.Tensor in 1.1: " + failed["hint"]]
    assert report["exports"]["onnx"]["status"] == report["exports"]["openvino"]["status"] == "converted"
    assert not (tmp_path / "run" / "artifacts" / "model.tflite").exists()
    rows = {r["runtime"]: r for r in report["results"]}
    assert rows["onnxruntime"]["status"] == rows["openvino"]["status"] == "pass"
    assert "litert" not in rows
    assert "could not be converted" in (tmp_path / "run" / "report.html").read_text()


def test_converter_messages_name_the_op_and_a_hint():
    from edgeship.exporters.failures import diagnose

    same_scale = diagnose("tflite", "error: 'tfl.average_pool_2d' op quantization parameters violate the same scale "
                                    "constraint: !quant.uniform<i8:f32, 0.0235> vs. !quant.uniform<i8:f32, 0.0117>")
    assert same_scale.op == "tfl.average_pool_2d" and "same quantization parameters" in same_scale.hint
    dependent = diagnose("openvino", "OpenVINO export failed: onnx: ExportError: needs the onnx artifact, whose "
                                     "export failed: ONNX export failed")
    assert dependent.op is None and "converted from the onnx artifact" in dependent.hint
    unknown = diagnose("onnx", "something new went wrong")
    assert unknown.op is None and unknown.summary == "onnx: conversion failed: see the converter log in logs/"


def test_a_model_no_converter_can_take_still_gets_a_report_naming_the_users_line(tmp_path):
    import inspect

    from tests import models

    recipe = tiny_recipe(tmp_path, **{"model.source": "tests.models:branchy_cnn", "stages": [],
                                      "latency.enabled": False})
    rc = main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rc == 3 and report["status"] == "fail" and report["results"] == []
    line = next(i for i, text in enumerate(inspect.getsource(models).splitlines(), 1) if "if x.mean() > 0" in text)
    for fmt in ("onnx", "tflite"):
        failed = report["exports"][fmt]
        assert failed["op"] == "data-dependent control flow" and "torch.where" in failed["hint"]
        assert failed["modules"][0].startswith(f"{models.__file__}:{line} (if x.mean() > 0")
    assert "onnx artifact, whose export failed" in report["exports"]["openvino"]["hint"]
    assert any("op-support check skipped" in n for n in report["notes"])
