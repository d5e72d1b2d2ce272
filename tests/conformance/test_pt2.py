"""``.pt2`` files are read without running code from them: a payload is refused with exit 5, nothing of it runs."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

from edgeship.cli import main
from tests.conformance.cases import Payload
from tests.conftest import tiny_recipe, write_recipe


def poisoned(archive: Path, out: Path, marker: Path, member: str = "data/sample_inputs/model.pt") -> Path:
    """A copy of ``archive`` whose ``member`` is replaced by a pickled payload (what an attacker would ship)."""
    payload = out.with_suffix(".payload")
    torch.save((Payload(marker),), payload)
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload.read_bytes() if info.filename.endswith(member) else src.read(info)
            dst.writestr(info, data)
    return out


@pytest.fixture(scope="module")
def trained_pt2(tmp_path_factory) -> Path:
    """A digits CNN, trained briefly, exported with a dynamic batch: a valid model source."""
    from edgeship.calibration.splits import make_splits
    from edgeship.core.graph import dynamic_batch_shapes
    from edgeship.training.supervised import train_supervised
    from edgeship.zoo import digits_cnn

    splits = make_splits("digits", "digits", 64, 96, 0, (1, 12, 16), (0.5,), (0.5,))
    model = digits_cnn()
    train_supervised(model, splits.train.x, splits.train.y, epochs=3, lr=0.01, batch_size=64, weight_decay=1e-4,
                     seed=0, log=lambda _m: None)
    example = torch.from_numpy(splits.validation.x[:2])
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic_batch_shapes(model))
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    torch.export.save(program, path)
    return path


def test_a_valid_pt2_model_source_runs(tmp_path, trained_pt2):
    recipe = tiny_recipe(tmp_path, **{"model.source": str(trained_pt2), "stages": [], "export.formats": ["onnx"],
                                      "latency.enabled": False})
    assert main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("member", ["data/sample_inputs/model.pt", "data/weights/weight_0"])
def test_check_refuses_a_payload_and_runs_none_of_it(tmp_path, trained_pt2, capsys, member):
    marker = tmp_path / "PWNED"
    if member.startswith("data/weights/"):  # a weight stored as a pickle (use_pickle) instead of raw bytes
        evil = _pickled_weight(trained_pt2, tmp_path / "evil.pt2", marker)
    else:
        evil = poisoned(trained_pt2, tmp_path / "evil.pt2", marker, member)
    assert main(["check", str(evil), "--profile", "cpu"]) == 5
    err = capsys.readouterr().err
    assert member in err and "refused" in err and "Traceback" not in err
    assert not marker.exists()


def _pickled_weight(archive: Path, out: Path, marker: Path) -> Path:
    payload = out.with_suffix(".payload")
    torch.save(Payload(marker), payload)
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data/weights/model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                data = json.dumps(config).encode()
            elif info.filename.endswith("data/weights/weight_0"):
                data = payload.read_bytes()
            dst.writestr(info, data)
    return out


def test_a_payload_as_model_source_is_refused(tmp_path, trained_pt2, capsys):
    marker = tmp_path / "PWNED"
    evil = poisoned(trained_pt2, tmp_path / "evil.pt2", marker)
    recipe = tiny_recipe(tmp_path, **{"model.source": str(evil), "stages": [], "export.formats": ["onnx"]})
    assert main(["export", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")]) == 5
    assert "holds pickled Python objects beyond tensors" in capsys.readouterr().err
    assert not marker.exists()


def test_random_bytes_as_pt2_are_a_clear_error(tmp_path, capsys):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(bytes(range(256)) * 8)
    assert main(["check", str(junk), "--profile", "cpu"]) == 5
    err = capsys.readouterr().err
    assert "not a .pt2 archive" in err and "Traceback" not in err and "internal error" not in err


def test_resume_never_loads_a_replaced_stage_file_even_with_a_rewritten_manifest(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, **{"stages": [{"type": "train", "epochs": 1}, {"type": "quantize"}],
                                      "export.formats": ["onnx"], "latency.enabled": False})
    path, run = write_recipe(tmp_path, recipe), tmp_path / "run"
    assert main(["export", str(path), "--out", str(run)]) == 0
    stage_file = run / "stages" / "02-quantize" / "model.pt2"
    marker = tmp_path / "PWNED"
    poisoned(stage_file, tmp_path / "evil.pt2", marker).replace(stage_file)
    manifest = json.loads((run / "manifest.json").read_text())  # the attacker updates the self-attested hashes
    digest = hashlib.sha256(stage_file.read_bytes()).hexdigest()
    for stage in manifest["stages"]:
        stage["files"] = {k: digest if k.endswith("model.pt2") else v for k, v in stage["files"].items()}
    (run / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["export", str(path), "--out", str(run), "--resume"]) == 0  # recomputed, never loaded
    printed = " ".join(capsys.readouterr().err.split())  # rich wraps long lines at 80 columns without a TTY
    assert "02-quantize/model.pt2 does not carry this machine's signature" in printed
    assert not marker.exists()
    report = json.loads((run / "report.json").read_text())
    assert any("stage 2 quantize recomputed on --resume" in n for n in report["notes"])
