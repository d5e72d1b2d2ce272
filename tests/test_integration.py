"""End to end: a tiny CNN trained on digits through all three exporters and runtimes, and gates that can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeship.cli import main
from edgeship.core.io import sha256_file
from tests.conftest import gated_results, load_report, tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[int, Path, Path]:
    """One full `edgeship run` of the tiny recipe (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("tiny")
    recipe = write_recipe(tmp, tiny_recipe(tmp))
    code = main(["run", str(recipe), "--out", str(tmp / "run")])
    return code, tmp / "run", recipe


def test_all_three_formats_agree_exactly(tiny_run):
    code, run_dir, _ = tiny_run
    assert code == 0
    report = load_report(run_dir)
    for r in gated_results(run_dir).values():
        assert r["status"] == "pass"
        assert r["metrics"]["top1_agreement"] == 1.0
        assert r["metrics"]["rel_max_err"] < 1e-4
        assert r["latency"]["p50"] > 0 and r["latency"]["runs"] == 10
    assert report["reference"]["accuracy"] > 0.5  # trained for real, not a degenerate reference
    assert report["reference"]["health"]["predicted_classes"] >= 5


def test_report_and_manifest_are_complete(tiny_run):
    _, run_dir, _ = tiny_run
    report = load_report(run_dir)
    for key in ("schema_version", "versions", "host", "threads", "seed", "results", "failed_gates", "artifacts"):
        assert key in report
    assert report["host"]["cpu"] and report["versions"]["onnxruntime"] != "missing"
    assert report["pytorch_latency"]["threads"] == 1
    html = (run_dir / "report.html").read_text()
    # latency, agreement, hot spots and the train stage's curves, embedded: the page needs no network
    assert html.count("data:image/png;base64,") == 4 and "<script" not in html
    assert all(r["op_profile"]["ops"] for r in report["results"] if "latency" in r)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "pass"
    for rel, digest in manifest["files"].items():
        assert sha256_file(run_dir / rel) == digest, rel
    for name in ("artifacts/model.onnx", "artifacts/model.tflite", "artifacts/openvino/model.xml",
                 "artifacts/openvino/model.bin", "report.json", "recipe.resolved.yaml"):
        assert name in manifest["files"]
    assert not list(run_dir.rglob(".edgeship-tmp-*"))


def test_onnx_artifact_is_self_contained_and_named(tiny_run):
    import onnx

    _, run_dir, _ = tiny_run
    model = onnx.load(str(run_dir / "artifacts" / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert not (run_dir / "artifacts" / "model.onnx.data").exists()
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["edgeship.input_spec"])["shape"] == [1, 1, 12, 16]


def test_perturbed_artifact_fails_the_gate(tiny_run, tmp_path):
    """Negative control: one weight tensor nudged by 0.05 in the exported ONNX must fail validation."""
    import onnx
    from onnx import numpy_helper

    from edgeship.calibration.splits import make_splits
    from edgeship.core.artifact import Artifact
    from edgeship.gates import evaluate_gates
    from edgeship.metrics import compare, reference_health
    from edgeship.recipe import GateConfig
    from edgeship.targets.onnxruntime import OnnxRuntimeSession

    _, run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    artifact = Artifact.from_dict(manifest["artifacts"]["onnx"], run_dir)
    splits = make_splits("digits", "digits", 64, 96, 0, (1, 12, 16), [0.5], [0.5])
    x = splits.validation.x
    ref = OnnxRuntimeSession(artifact, threads=1).run(x)  # the exact artifact as reference: passes every gate

    model = onnx.load(str(artifact.path))
    conv = next(t for t in model.graph.initializer if len(t.dims) == 4)
    conv.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(conv) + np.float32(0.05), conv.name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(model, str(bad))
    perturbed = Artifact.from_dict({**manifest["artifacts"]["onnx"], "path": str(bad), "files": [str(bad)]}, Path("/"))
    out = OnnxRuntimeSession(perturbed, threads=1).run(x)

    health = reference_health(ref)
    assert all(g.passed for g in evaluate_gates(compare(ref, ref, splits.validation.y), health, GateConfig()))
    failed = {g.gate for g in evaluate_gates(compare(out, ref, splits.validation.y), health, GateConfig())
              if not g.passed}
    assert "rel_max_err_max" in failed


def test_zero_head_reference_fails_with_exit_4(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, stages=[], **{"model.source": "tests.models:zero_head",
                                                  "export.formats": ["onnx"], "latency.enabled": False})
    code = main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")])
    assert code == 4
    out, err = capsys.readouterr()
    assert "meaningless" in out + err and "zero-initialised" in out + err  # the verdict is on stdout
    report = load_report(tmp_path / "run")
    assert report["status"] == "fail" and report["reference"]["health"]["constant"]
    onnx_row = next(r for r in report["results"] if r["runtime"] == "onnxruntime")
    assert onnx_row["metrics"]["top1_agreement"] == 1.0 and onnx_row["status"] == "fail"


def test_resume_reuses_unchanged_stages_and_reruns_changed(tiny_run, tmp_path):
    import shutil

    _, shared_dir, recipe = tiny_run
    run_dir = tmp_path / "run"
    shutil.copytree(shared_dir, run_dir)  # the other tests keep the shared run as it was
    common = ["--set", "export.formats=[onnx]", "--set", "latency.enabled=false", "--out", str(run_dir)]
    assert main(["run", str(recipe), "--resume", *common]) == 0
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"][0]
    assert stage["reused"] is True
    assert main(["run", str(recipe), "--resume", "--set", "stages.0.epochs=1", *common]) == 0
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"][0]
    assert stage["reused"] is False and stage["config"]["epochs"] == 1


def test_every_runtime_rejects_wrong_input_with_uniform_wording(tiny_run):
    from edgeship.core.artifact import Artifact
    from edgeship.targets import RUNTIMES, open_session
    from edgeship.targets.base import InputMismatch

    _, run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for name, runtime in RUNTIMES.items():
        target, _ = open_session(name, Artifact.from_dict(manifest["artifacts"][runtime.formats[0]], run_dir), 1)
        with pytest.raises(InputMismatch, match=r"expects shape \(N>=1, 1, 12, 16\) in NCHW; got \(1, 12, 16, 1\)"):
            target.run(np.zeros((1, 12, 16, 1), dtype=np.float32))
        with pytest.raises(InputMismatch, match="expects float32; got float64"):
            target.run(np.zeros((1, 1, 12, 16)))


def test_corrupt_artifact_is_reported_with_its_path(tiny_run, tmp_path):
    from edgeship.core.artifact import Artifact
    from edgeship.core.errors import ArtifactError
    from edgeship.targets.litert import LiteRTSession

    _, run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    data = (run_dir / "artifacts" / "model.tflite").read_bytes()
    bad = tmp_path / "model.tflite"
    bad.write_bytes(data[: len(data) // 3])
    artifact = Artifact.from_dict({**manifest["artifacts"]["tflite"], "path": str(bad), "files": [str(bad)]},
                                  Path("/"))
    with pytest.raises(ArtifactError, match="litert could not load .*model.tflite"):
        LiteRTSession(artifact, threads=1).load()
