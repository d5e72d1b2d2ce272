"""Bad input gets a clear error naming the file/field, the documented exit code, no traceback, nothing half-written."""

from __future__ import annotations

import pytest
import torch

from edgeship.cli import main
from edgeship.zoo import digits_cnn
from tests.conftest import tiny_recipe, write_recipe


def run_cli(tmp_path, capsys, recipe: dict, *extra: str) -> tuple[int, str]:
    """Run `edgeship export` (no validation/profiling needed to reach these errors); return (code, stderr)."""
    code = main(["export", str(write_recipe(tmp_path, recipe)), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def no_artifacts(tmp_path) -> bool:
    return not list((tmp_path / "runs").rglob("model.*"))


def test_missing_weights_file(tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.weights": str(tmp_path / "nope.pt")}))
    assert code == 2 and "model.weights: file not found" in err and "nope.pt" in err


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "weights file is empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", "Git LFS pointer"),
    (b"<html><body>404</body></html>", "not a PyTorch weights file (it starts with"),
])
def test_corrupt_weights_file(tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.weights": str(bad)}))
    assert code == 5 and needle in err and "bad.pt" in err and no_artifacts(tmp_path)


def test_truncated_weights_file(tmp_path, capsys):
    path = tmp_path / "w.pt"
    torch.save(digits_cnn().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.weights": str(path)}))
    assert code == 5 and "not a loadable weights file" in err


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "whole_model.pt"
    torch.save(digits_cnn(), path)  # a whole pickled module, not a state_dict
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.weights": str(path)}))
    assert code == 5 and "weights_only=True" in err


def test_corrupt_safetensors(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}")  # header length beyond the file
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.weights": str(path)}))
    assert code == 5 and "corrupt safetensors" in err


def test_weights_that_do_not_match_the_architecture(tmp_path, capsys):
    sd = digits_cnn(width=8).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["11.weight"]
    path = tmp_path / "other.pth"
    torch.save(sd, path)
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.weights": str(path)}))
    assert code == 5 and "do not match the model architecture" in err
    assert "missing keys: 11.weight" in err and "unexpected keys: extra.weight" in err and "shape mismatches" in err


def test_matching_weights_load_and_ddp_prefix_is_stripped(tmp_path):
    from edgeship.models import load_weights

    src = digits_cnn()
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = digits_cnn()
    load_weights(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))


def test_unknown_model_name(tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.source": "torchvision:resnet81"}))
    assert code == 2 and "unknown torchvision model 'resnet81'" in err and "resnet18" in err


def test_unknown_factory_and_malformed_source(tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.source": "edgeship.zoo:no_such"}))
    assert code == 2 and "has no attribute 'no_such'" in err
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.source": "resnet18"}))
    assert code == 2 and "expected torchvision:<name>" in err


def test_model_from_python_file(tmp_path, capsys):
    f = tmp_path / "mymodel.py"
    f.write_text("from edgeship.zoo import digits_cnn\n\ndef build(num_classes):\n    return digits_cnn(num_classes)\n")
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.source": f"{f}:buld"}))
    assert code == 2 and "has no 'buld'" in err and "build" in err


def test_wrong_input_shape_for_the_model(tmp_path, capsys):
    shape = {"shape": [1, 3, 12, 16], "mean": [0.5], "std": [0.5], "num_classes": 10}
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"model.input": shape}))
    assert code == 2 and "model.input.shape [1, 3, 12, 16] does not fit" in err


def test_wrong_num_classes(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, **{"model.source": "torchvision:resnet18", "model.input.num_classes": 10})
    recipe["model"]["source"] = "tests.models:fixed_ten_classes"
    recipe["model"]["input"]["num_classes"] = 7
    code, err = run_cli(tmp_path, capsys, recipe)
    assert code == 2 and "expected logits of shape (1, 7)" in err


def test_empty_data_source(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), dtype=np.float32))
    recipe = tiny_recipe(tmp_path, **{"data.validation": {"source": f"npz:{tmp_path / 'empty.npz'}", "samples": 10}})
    code, err = run_cli(tmp_path, capsys, recipe)
    assert code == 2 and "empty.npz" in err and "is empty" in err and no_artifacts(tmp_path)


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run directory should go")
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path), "--out", str(blocker / "run"))
    assert code == 2 and "is not writable" in err and str(blocker) in err


def test_bad_recipe_key_exit_code(tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, tiny_recipe(tmp_path, **{"validate.gate": {}}))
    assert code == 2 and "validate.gate: unknown key" in err and "gates" in err


def test_console_script_reports_without_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "edgeship"
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, **{"model.source": "torchvision:nonet"}))
    proc = subprocess.run([str(exe), "run", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown torchvision model" in proc.stderr and "Traceback" not in proc.stderr


def test_safetensors_weights_load_into_a_model_that_checks_its_module_versions(tmp_path):
    # torchvision's MNASNet refuses a state_dict without module versions ("version should be set to 1 or 2 instead
    # of None"); safetensors files never carry them.
    import torchvision
    from safetensors.torch import save_file

    from edgeship.models import load_weights

    trained = torchvision.models.get_model("mnasnet0_5", num_classes=10)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    model = torchvision.models.get_model("mnasnet0_5", num_classes=10)
    load_weights(model, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values(),
                                                 strict=True))
