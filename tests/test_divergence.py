"""Layer-wise divergence finds a layer perturbed on purpose, on the runtimes that read the perturbed file only."""

from __future__ import annotations

import dataclasses

import numpy as np

import edgeship
from edgeship.divergence import recovered_rows, steepest_drop
from edgeship.exporters import FORMATS
from tests.conftest import load_report, tiny_recipe

W8A8 = [{"type": "train", "epochs": 3, "lr": 0.01},
        {"type": "quantize", "mode": "ptq", "weight_bits": 8, "act_bits": 8}]


def _negated(fmt, initializer):
    """``fmt``'s exporter, then one weight initializer of the written ONNX file negated (a wrong conv)."""

    def export(model, spec, ctx, options):
        import onnx
        from onnx import numpy_helper

        artifact = fmt.exporter(model, spec, ctx, options)
        proto = onnx.load(str(artifact.path))
        init = next(i for i in proto.graph.initializer if i.name == initializer)
        w = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(np.clip(-w.astype(np.int16), -127, 127).astype(w.dtype), initializer))
        onnx.save(proto, str(artifact.path))
        return artifact

    return dataclasses.replace(fmt, exporter=export)


def test_a_perturbed_conv_is_the_first_divergent_layer(tmp_path, monkeypatch):
    monkeypatch.setitem(FORMATS, "onnx", _negated(FORMATS["onnx"], "3.weight_int8"))
    recipe = tiny_recipe(tmp_path, stages=W8A8, **{"latency.enabled": False, "check.enabled": False})
    result = edgeship.run(recipe, out=tmp_path / "run")
    assert not result.passed  # the gate failed, so the divergence is in the report without asking
    tables = result.report["divergence"]["runtimes"]
    for label in ("onnxruntime", "openvino(onnx)", "openvino"):  # the IR is converted from the ONNX file
        first = tables[label]["first_divergent"]
        assert (first["layer"], first["op"]) == ("3", "conv2d"), (label, first)
        before = [r for r in tables[label]["layers"] if r["position"] < first["position"]]
        assert before and all(r["sqnr_db"] >= 30 for r in before)  # the layers before it are still right
        steep = tables[label]["steepest_drop"]
        assert steep["node"] == first["node"] and steep["drop_db"] > 20, (label, steep)
        # the reference rounds the same way under a rounding-sized perturbation: the runtime is far under its floor
        assert first["floor_db"] > first["sqnr_db"] + 20, (label, first)
    assert tables["litert"]["matched"] >= 3 and tables["litert"]["first_divergent"] is None
    assert "SQNR by depth" in (tmp_path / "run" / "report.html").read_text()


def test_debug_command_tables_a_run_that_passed(tmp_path, capsys):
    from edgeship.cli import main

    recipe = tiny_recipe(tmp_path, **{"latency.enabled": False, "check.enabled": False})
    result = edgeship.run(recipe, out=tmp_path / "run")
    assert result.passed and result.report["divergence"] is None  # nothing failed: not computed
    assert main(["debug", str(tmp_path / "run"), "--runtime", "litert"]) == 0
    out = capsys.readouterr().out
    assert "litert" in out and "layer-wise divergence" in out
    report = load_report(tmp_path / "run")
    assert set(report["divergence"]["runtimes"]) == {"litert"}
    assert report["divergence"]["runtimes"]["litert"]["matched"] >= 3


def _rows(*sqnrs: float) -> list[dict]:
    return [{"layer": f"l{i}", "node": f"n{i}", "position": i, "sqnr_db": s} for i, s in enumerate(sqnrs)]


def test_steepest_drop_ignores_falls_from_exact_agreement():
    # 140 -> 48 dB is float-exact to one-level rounding; the break is the 18 dB fall into l3
    steep = steepest_drop(_rows(140.0, 48.0, 40.0, 22.0, 21.0))
    assert steep["node"] == "n3" and steep["drop_db"] == 18.0


def test_a_divergence_the_data_flow_recovers_from_is_a_mismatch_not_a_break():
    def table(edges: dict[str, str], sqnrs: dict[str, float]) -> set[str]:
        rows = {n: {"layer": n, "node": n, "position": i, "sqnr_db": v} for i, (n, v) in enumerate(sqnrs.items())}
        return recovered_rows(rows, {a: tuple(b.split()) for a, b in edges.items()}, 20.0)

    # b is another tensor under b's name (its reader c is exact again); d breaks for good on the way to the output
    assert table({"a": "b", "b": "q", "q": "c", "c": "d", "d": "e"},  # q: a quantize node without a row
                 {"a": 45.0, "b": -5.0, "c": 45.0, "d": 12.0, "e": 8.0}) == {"b"}
    # a chain of mismatches that ends right again recovers as a whole
    assert table({"p": "r", "r": "s", "s": "t"}, {"p": 3.0, "r": 7.0, "s": 9.0, "t": 40.0}) == {"p", "r", "s"}
    # error hovering around the threshold is the network's own (an 18 dB conv, 20.5 dB after its ReLU)
    assert table({"conv": "relu", "relu": "out"}, {"conv": 18.0, "relu": 20.5, "out": 30.0}) == set()
    # a branch that diverges reaches the concatenation and stays: nothing recovers
    assert table({"x": "br1 br2", "br1": "cat", "br2": "cat", "cat": "out"},
                 {"x": 24.0, "br1": 18.0, "br2": 23.0, "cat": 17.0, "out": 16.0}) == set()
