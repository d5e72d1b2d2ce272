"""engineering.md Part B's reliability tests 3-10 as data-driven cases (1, 2 and E1 are rows of cases.py).

3: every runtime words a bad input the same way; 4: empty and non-finite data fail, and so do non-finite outputs;
5: gates pass the exported artifact and fail a perturbed one; 6: the transformation is in the artifact;
7: check lists every reason in one pass; 8: an interrupted write leaves the old file or none;
9: resume reuses exactly what is unchanged and intact; 10: the same recipe twice gives the same keys and bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgeship.core.errors import DataError
from edgeship.targets import RUNTIMES, open_session
from tests.conformance.cases import exported, recipe_file

F32 = np.float32
# (case, input, words of the message after the runtime's name)
BAD_INPUTS = [
    ("wrong rank", np.zeros((1, 16, 16), F32), "expects shape (N>=1, 1, 16, 16) in NCHW; got (1, 16, 16)"),
    ("a wrong dimension", np.zeros((1, 1, 16, 15), F32), "expects shape (N>=1, 1, 16, 16) in NCHW; got (1, 1, 16, 15)"),
    ("float64", np.zeros((1, 1, 16, 16)), "input 'input' expects float32; got float64"),
    ("NHWC for NCHW", np.zeros((1, 16, 16, 1), F32), "in NCHW; got (1, 16, 16, 1)"),
    ("batch 0", np.zeros((0, 1, 16, 16), F32), "in NCHW; got (0, 1, 16, 16)"),
    ("not an array", [[0.0]], "input 'input' must be a numpy array; got list"),
]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    return {name: open_session(name, exported_for(tmp, r.formats[0]), threads=1)[0].load()
            for name, r in RUNTIMES.items()}


def exported_for(tmp: Path, fmt: str):
    """The digits CNN exported as ``fmt``, as the Artifact a session opens."""
    from edgeship.core.artifact import Artifact, InputSpec

    path = exported(tmp / fmt, fmt)
    spec = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
    files = [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]
    return Artifact(format=fmt, path=path, files=files, input_spec=spec, input_names=["input"],
                    output_names=["logits"], batch=1, converter="test")


@pytest.mark.parametrize(("case", "x", "words"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_3_every_runtime_words_a_bad_input_the_same(sessions, case, x, words):
    from edgeship.targets.base import InputMismatch

    messages = {}
    for name, session in sessions.items():
        with pytest.raises(InputMismatch) as e:
            session.run(x)
        messages[name] = str(e.value).removeprefix(f"{name}: ")
    assert len(set(messages.values())) == 1 and words in messages["onnxruntime"], messages


def test_3_a_non_contiguous_input_runs_like_a_contiguous_one(sessions):
    x = np.random.default_rng(0).random((16, 16, 1, 2), F32).transpose(3, 2, 0, 1)  # (2, 1, 16, 16), strided
    for session in sessions.values():
        assert np.array_equal(session.run(x), session.run(np.ascontiguousarray(x)))


# (case, x, labels, words) fed to make_splits through an npz source
BAD_DATA = [
    ("empty calibration", np.zeros((0, 1, 8, 8), F32), "is empty: it holds 0 samples"),
    ("NaN in calibration", np.where(np.eye(8)[None, None] > 0, np.nan, 0.5).astype(F32).repeat(40, 0),
     "contain NaN or Inf"),
    ("Inf in calibration", np.full((40, 1, 8, 8), np.inf, F32), "contain NaN or Inf"),
]


@pytest.mark.parametrize(("case", "x", "words"), BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_4_empty_and_non_finite_data_fail(tmp_path, case, x, words):
    from edgeship.calibration.splits import make_splits

    np.savez(tmp_path / "d.npz", x=x)
    with pytest.raises(DataError, match=words.replace("(", r"\(")):
        make_splits(f"npz:{tmp_path / 'd.npz'}", "digits", 8, 8, 0, (1, 8, 8), [0.5], [0.5])


NON_FINITE_OUTPUTS = [("NaN output, finite reference", np.nan, 1.0), ("Inf output", np.inf, 1.0),
                      ("NaN output and NaN reference", np.nan, np.nan)]


@pytest.mark.parametrize(("case", "out_value", "ref_value"), NON_FINITE_OUTPUTS,
                         ids=[c[0] for c in NON_FINITE_OUTPUTS])
def test_4_a_non_finite_output_fails_the_gate_even_against_a_non_finite_reference(case, out_value, ref_value):
    from edgeship.gates import evaluate_gates
    from edgeship.metrics import compare, reference_health
    from edgeship.recipe import GateConfig

    ref = np.random.default_rng(0).standard_normal((16, 10)).astype(F32)
    out = ref.copy()
    out[3, 2], ref[3, 2] = out_value, ref_value
    gates = {g.gate: g for g in evaluate_gates(compare(out, ref), reference_health(np.nan_to_num(ref)), GateConfig())}
    assert not gates["non_finite_max"].passed and gates["non_finite_max"].value == 1


@pytest.mark.parametrize("k", ["none", "half", "all-but-one"])
def test_8_an_interrupted_write_leaves_the_old_file_or_none(tmp_path, k):
    from edgeship.core.io import atomic_path

    target, data = tmp_path / "model.onnx", bytes(range(256)) * 64
    for existed in (False, True):
        if existed:
            target.write_bytes(b"previous")
        cut = {"none": 0, "half": len(data) // 2, "all-but-one": len(data) - 1}[k]
        with pytest.raises(RuntimeError), atomic_path(target) as tmp:
            tmp.write_bytes(data[:cut])
            raise RuntimeError("crash mid-write")
        assert (target.read_bytes() == b"previous") if existed else not target.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == (["model.onnx"] if existed else [])


def test_10_the_same_recipe_twice_gives_the_same_keys_metrics_and_bytes(tmp_path):
    from edgeship.cli import main

    recipe = recipe_file(tmp_path, stages=[{"type": "train", "epochs": 2}, {"type": "quantize"}])
    runs = []
    for name in ("a", "b"):
        assert main(["export", str(recipe), "--out", str(tmp_path / name)]) == 0
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        onnx = hashlib.sha256((tmp_path / name / "artifacts" / "model.onnx").read_bytes()).hexdigest()
        runs.append(([(s["key"], json.dumps(s["metrics"], sort_keys=True)) for s in manifest["stages"]], onnx))
    assert runs[0] == runs[1]


# -- 5: gates have positive and negative controls ------------------------------------------------------------------
def _perturb_first_weight(model, delta: float):
    from onnx import numpy_helper

    init = next(t for t in model.graph.initializer if len(t.dims) == 4)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(delta), init.name))
    return model


GATE_CONTROLS = [("the artifact as exported", 0.0, set()), ("one conv weight + 1e-2", 1e-2, {"rel_max_err_max"})]


@pytest.mark.parametrize(("case", "delta", "failing"), GATE_CONTROLS, ids=[c[0] for c in GATE_CONTROLS])
def test_5_gates_pass_the_exported_artifact_and_fail_a_perturbed_one(tmp_path, case, delta, failing):
    import onnx

    from edgeship.gates import evaluate_gates
    from edgeship.metrics import compare, reference_health
    from edgeship.recipe import GateConfig

    artifact = exported_for(tmp_path, "onnx")
    x = np.random.default_rng(0).standard_normal((64, 1, 16, 16)).astype(F32)
    unperturbed = open_session("onnxruntime", artifact, 1)[0].load().run(x)
    onnx.save(_perturb_first_weight(onnx.load(str(artifact.path)), delta), str(artifact.path))
    out = open_session("onnxruntime", artifact, 1)[0].load().run(x)
    gates = evaluate_gates(compare(out, unperturbed), reference_health(unperturbed), GateConfig())
    assert {g.gate for g in gates if not g.passed} == failing, [g.detail for g in gates]


# -- 6: the transformation happened, asserted on the artifact -----------------------------------------------------
TRANSFORMS = [
    ("quantize W4: INT4 weights, a file under 30% of fp32", [{"type": "train", "epochs": 1},
                                                           {"type": "quantize", "weight_bits": 4}]),
    ("prune ratio 0.5 round_to 8: channels are multiples of 8", [{"type": "train", "epochs": 1},
                                                                 {"type": "prune", "ratio": 0.5, "round_to": 8}]),
]


@pytest.mark.parametrize(("case", "stages"), TRANSFORMS, ids=[c[0] for c in TRANSFORMS])
def test_6_the_transformation_is_in_the_artifact(tmp_path, case, stages):
    import onnx

    from edgeship.cli import main

    assert main(["export", str(recipe_file(tmp_path, stages=stages)), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    proto = onnx.load(str(tmp_path / "run" / "artifacts" / "model.onnx"))
    if stages[1]["type"] == "quantize":
        assert sum(t.data_type == onnx.TensorProto.INT4 for t in proto.graph.initializer) >= 1
        assert report["quantization"]["sizes"]["onnx"]["ratio_vs_fp32"] < 0.3
    else:
        convs = [t for t in proto.graph.initializer if len(t.dims) == 4]
        pruned = [c for c in report["stages"][1]["metrics"]["channels"] if c["after"] != c["before"]]
        assert pruned and all(c["after"] % 8 == 0 for c in pruned)
        assert {c["after"] for c in pruned} <= {t.dims[0] for t in convs}  # the ONNX convs have the pruned widths


# -- 7: the preflight is complete, in one pass ---------------------------------------------------------------------
PREFLIGHT = [("digits_resnet on archnet", "edgeship.zoo:digits_resnet", "archnet", 3,
              {"unsupported_op", "kernel_size"}),
             ("digits_resnet on int8-npu", "edgeship.zoo:digits_resnet", "int8-npu", 3, {"unsupported_op"}),
             ("digits_cnn on cpu", "edgeship.zoo:digits_cnn", "cpu", 0, set())]


@pytest.mark.parametrize(("case", "source", "profile", "code", "reasons"), PREFLIGHT, ids=[c[0] for c in PREFLIGHT])
def test_7_check_lists_every_reason_in_one_pass(tmp_path, case, source, profile, code, reasons):
    from edgeship.cli import main

    out = tmp_path / "check.json"
    assert main(["check", source, "--profile", profile, "--input-shape", "1,1,16,16", "--json", str(out)]) == code
    report = json.loads(out.read_text())
    assert {v["reason"] for v in report["violations"]} == reasons and report["ops_seen"]["pytorch"] > 0


# -- 9: resume loses nothing and redoes nothing -------------------------------------------------------------------
def _flip_first_stage_file(run: Path) -> None:
    path = next((run / "stages" / "01-train").glob("model.safetensors"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


RESUMES = [("nothing changed", (), None, [True, True]),
           ("stage 2 edited", ("--set", "stages.1.calibration.samples=32"), None, [True, False]),
           ("stage 1 file damaged", (), _flip_first_stage_file, [False, True])]


@pytest.mark.parametrize(("case", "extra", "damage", "reused"), RESUMES, ids=[c[0] for c in RESUMES])
def test_9_resume_reuses_exactly_what_is_unchanged_and_intact(tmp_path, case, extra, damage, reused):
    from edgeship.cli import main

    recipe = recipe_file(tmp_path, stages=[{"type": "train", "epochs": 1}, {"type": "quantize"}])
    run = tmp_path / "run"
    assert main(["export", str(recipe), "--out", str(run)]) == 0
    first = [s["key"] for s in json.loads((run / "manifest.json").read_text())["stages"]]
    if damage is not None:
        damage(run)
    assert main(["export", str(recipe), "--out", str(run), "--resume", *extra]) == 0
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert [s["reused"] for s in stages] == reused
    assert [s["key"] for s in stages][0] == first[0]


def test_training_checkpoints_are_in_the_manifest_and_an_altered_one_is_not_reused(tmp_path):
    import torch

    from edgeship.cli import main

    recipe = recipe_file(tmp_path, stages=[{"type": "train", "epochs": 1},
                                           {"type": "quantize", "mode": "qat", "qat": {"epochs": 1}}])
    run = tmp_path / "run"
    assert main(["export", str(recipe), "--out", str(run)]) == 0
    stage = json.loads((run / "manifest.json").read_text())["stages"][1]
    rel = "stages/02-quantize/checkpoint.pt"
    assert rel in stage["files"] and rel in stage["signatures"]
    ckpt = torch.load(run / rel, weights_only=True)  # loadable, altered: what a hash-only check would accept
    ckpt["epoch"] = 0
    torch.save(ckpt, run / rel)
    assert main(["export", str(recipe), "--out", str(run), "--resume"]) == 0
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert [s["reused"] for s in stages] == [True, False]
    notes = json.loads((run / "report.json").read_text())["notes"]
    assert any(f"{rel} is missing or changed" in n for n in notes)
