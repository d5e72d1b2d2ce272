"""The cross-runtime matrix names the odd one out: a conversion whose file computes something else, or a runtime.

Both faults are injected for real: the TFLite exporter's own file gets two classifier rows swapped (every
runtime that reads it sees the change, as with a conversion bug), or LiteRT's outputs are altered after the
real interpreter ran (one runtime only, the other reader of the same file is untouched).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import edgeship
from edgeship.crossruntime import cross_runtime_matrix
from edgeship.exporters import FORMATS
from edgeship.targets import RUNTIMES
from edgeship.targets.litert import LiteRTSession
from tests.conftest import tiny_recipe

FAST = {"latency.enabled": False, "check.enabled": False}


def _swapped_classes(fmt):
    """``fmt``'s exporter, then classes 0 and 1 of the classifier swapped inside the written file."""

    def export(model, spec, ctx, options):
        artifact = fmt.exporter(model, spec, ctx, options)
        weight = next(m for m in reversed(list(model.modules())) if hasattr(m, "out_features")).weight
        w = weight.detach().numpy().astype(np.float32)
        data = artifact.path.read_bytes()
        at = data.find(w.tobytes())
        assert at >= 0, "the classifier's weights are not stored verbatim in the file"
        row = w.shape[1] * 4
        swapped = data[:at] + w[[1, 0]].tobytes() + data[at + 2 * row:]
        artifact.path.write_bytes(swapped)
        return artifact

    return dataclasses.replace(fmt, exporter=export)


class ShiftedLiteRT(LiteRTSession):
    """The real LiteRT interpreter, whose logits then favour class 0 by a wide margin on even samples."""

    def _run_chunk(self, x):
        out = super()._run_chunk(x)
        out[::2, 0] += 1e3
        return out


def test_a_file_every_reader_disagrees_on_is_named_as_the_conversion(tmp_path, monkeypatch):
    monkeypatch.setitem(FORMATS, "tflite", _swapped_classes(FORMATS["tflite"]))
    result = edgeship.run(tiny_recipe(tmp_path, **FAST), out=tmp_path / "run")
    findings = result.report["cross_runtime"]["findings"]
    assert [f["kind"] for f in findings] == ["conversion"], findings
    assert findings[0]["format"] == "tflite" and findings[0]["executions"] == ["litert", "openvino(tflite)"]
    assert findings[0]["differing_samples"] > 0
    assert not result.passed and any(n.startswith("cross-runtime: the tflite file") for n in result.report["notes"])


def test_one_runtime_that_disagrees_with_the_others_is_named(tmp_path, monkeypatch):
    litert = RUNTIMES["litert"]
    monkeypatch.setitem(RUNTIMES, "litert", dataclasses.replace(
        litert, session="tests.test_cross_runtime:ShiftedLiteRT"))
    result = edgeship.run(tiny_recipe(tmp_path, **FAST), out=tmp_path / "run")
    x = result.report["cross_runtime"]
    assert [(f["kind"], f["execution"]) for f in x["findings"]] == [("runtime", "litert")]
    assert "including openvino(tflite) reading the same tflite file" in x["findings"][0]["detail"]
    i, j = x["executions"].index("litert"), x["executions"].index("openvino(tflite)")
    assert x["differing_samples"][i][j] == x["findings"][0]["differing_samples"] > 0
    assert result.results["openvino(tflite)"]["status"] == "info"
    # The failing row itself says it is the odd one out, not that the reference is bad.
    assert result.results["litert"]["status"] == "fail"
    assert result.results["litert"]["cross_runtime_finding"] == x["findings"][0]["detail"]
    assert "cross_runtime_finding" not in result.results["onnxruntime"]


@pytest.mark.parametrize("shifted", [None, "b"])
def test_matrix_on_labels(shifted):
    """No finding when all agree; one shifted execution among four is the runtime at fault."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 5))
    outs = {k: ref + 1e-6 for k in ("a", "b", "c")}
    if shifted:
        outs[shifted] = np.roll(ref, 1, axis=1)
    m = cross_runtime_matrix(outs, {"a": "onnx", "b": "tflite", "c": "tflite"}, ref, allowed=0)
    assert [f.get("execution") for f in m["findings"]] == ([shifted] if shifted else [])
