"""The Python API the CLI itself uses: edgeship.run / check / load_recipe, with files, dicts and in-memory models."""

from __future__ import annotations

import pytest
import torch

import edgeship
from edgeship.zoo import digits_cnn
from tests.conftest import tiny_recipe, write_recipe


def test_run_a_dict_recipe_with_an_in_memory_model(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"export.formats": ["onnx", "tflite"], "latency.enabled": False})
    del recipe["model"]["source"]
    model = digits_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines: list[str] = []
    result = edgeship.run(recipe, out=tmp_path / "run", model=model, log=lines.append)
    assert result.passed and result.status == "pass" and result.report_path == tmp_path / "run" / "report.html"
    assert {k for k, r in result.results.items() if r["gated"]} == {"onnxruntime", "litert"}
    assert set(result.results) == {"onnxruntime", "litert", "openvino(onnx)", "openvino(tflite)"}  # cross-checks
    assert set(result.artifacts) == {"onnx", "tflite"}
    assert result.artifacts["onnx"].path.is_file() and result.report_path.is_file()
    assert result.report["model"]["source"] == "python:torch.nn.modules.container.Sequential"
    assert any(line.startswith("stage 1 train") for line in lines)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model: untouched


def test_run_a_file_with_overrides_and_a_failing_gate(tmp_path):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, **{"export.formats": ["onnx"]}))
    result = edgeship.run(path, out=tmp_path / "run", overrides=["latency.enabled=false",
                                                                 "validate.gates.rel_max_err_max=0"])
    assert not result.passed and result.status == "fail" and result.failed_gates
    assert result.results["onnxruntime"]["status"] == "fail"


def test_load_recipe_and_errors_carry_exit_codes(tmp_path):
    recipe = edgeship.load_recipe(tiny_recipe(tmp_path), ["latency.threads=3"])
    assert isinstance(recipe, edgeship.Recipe) and recipe.latency.threads == 3
    assert edgeship.load_recipe(recipe) is recipe
    with pytest.raises(edgeship.EdgeshipError, match="unknown key") as e:
        edgeship.load_recipe({**tiny_recipe(tmp_path), "colour": "red"})
    assert e.value.exit_code == 2


def test_check_a_module_and_a_source():
    report = edgeship.check(digits_cnn(), profile="archnet", input_shape=(1, 1, 16, 16))
    assert not report.passed and report.ops_seen["pytorch"] > 0
    assert edgeship.check("edgeship.zoo:digits_cnn", profile="cpu", input_shape=(1, 1, 16, 16)).passed


def test_check_refuses_a_shape_that_is_not_nchw(capsys):
    from edgeship.cli import main

    with pytest.raises(edgeship.EdgeshipError, match=r"four positive integers N,C,H,W; got \[1, 16, 16\]"):
        edgeship.check("edgeship.zoo:digits_cnn", input_shape=(1, 16, 16))
    assert main(["check", "edgeship.zoo:digits_cnn", "--input-shape", "1,0,16,16"]) == 2
    assert main(["check", "edgeship.zoo:digits_cnn", "--input-shape", "1,x,16,16"]) == 2
    assert "--input-shape expects four positive integers" in capsys.readouterr().err
