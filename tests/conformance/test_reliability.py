"""engineering.md Part B's reliability tests 3, 4, 8 and 10 as data-driven cases (1, 2 and E1 are in cases.py).

3: every runtime words a bad input the same way; 4: empty and non-finite data fail, and so do non-finite outputs;
8: an interrupted write leaves the old file or none; 10: the same recipe twice gives the same keys and bytes.
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
