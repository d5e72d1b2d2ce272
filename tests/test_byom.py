"""Bring your own model: a recipe means the same from any directory, sibling imports work, checkpoint wrappers
unwrap (or get a hint), a wrong normalisation is not a PASS, and an export-only run says it validated nothing."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from edgeship.cli import main
from tests.conftest import load_report, tiny_recipe, write_recipe

BLOCK = "from torch import nn\n\n\ndef block(cin, cout):\n    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]\n"
NET = ("from torch import nn\n\nfrom {module} import block  # a sibling of this file, not an installed package\n\n\n"
       "def build(num_classes=10):\n"
       "    return nn.Sequential(*block(1, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n")


def same_architecture() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


@pytest.mark.parametrize("layout", ["file", "module"])
def test_a_recipe_runs_the_same_from_another_directory_with_sibling_imports(tmp_path, monkeypatch, capsys, layout):
    project = tmp_path / "project"
    if layout == "file":  # models/net.py:build, importing models/blocks.py
        (project / "models").mkdir(parents=True)
        (project / "models" / "blocks.py").write_text(BLOCK)
        (project / "models" / "net.py").write_text(NET.format(module="blocks"))
        source = "models/net.py:build"
    else:  # mymodel:build, a module next to the recipe, importing a helper module beside it
        project.mkdir()
        (project / "helpers_byom.py").write_text(BLOCK)
        (project / "mymodel_byom.py").write_text(NET.format(module="helpers_byom"))
        source = "mymodel_byom:build"
    (project / "weights").mkdir()
    lightning = {"state_dict": {f"model.{k}": v for k, v in same_architecture().state_dict().items()}, "epoch": 3}
    torch.save(lightning, project / "weights" / "last.ckpt")  # a Lightning checkpoint: nested and prefixed
    recipe = {"name": "mine", "model": {"source": source, "weights": "weights/last.ckpt",
                                        "input": {"shape": [1, 1, 8, 8], "num_classes": 10}},
              "export": {"formats": ["onnx"]}}
    (project / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc = main(["export", str(project / "recipe.yaml"), "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0, out
    report = load_report(tmp_path / "run")
    assert report["model"]["weights"] == str(project / "weights" / "last.ckpt")  # resolved against the recipe
    # Nothing was validated: the run says so instead of PASS.
    assert report["status"] == "exported" and "EXPORTED (nothing was validated)" in out and "PASS" not in out


def test_keys_that_differ_only_by_an_unknown_prefix_get_a_hint_naming_it(tmp_path):
    from edgeship.core.errors import CheckpointError
    from edgeship.models import load_weights

    model = same_architecture()
    torch.save({f"backbone.{k}": v for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="every key of the file starts with 'backbone.'"):
        load_weights(model, tmp_path / "w.pt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    load_weights(model, tmp_path / "ddp.pt")  # DDP's prefix is unwrapped


def test_a_model_run_with_the_wrong_normalisation_is_not_a_pass(tmp_path):
    import edgeship

    trained = edgeship.run(tiny_recipe(tmp_path, **{"export.formats": ["onnx"], "latency.enabled": False,
                                                    "check.enabled": False}), out=tmp_path / "trained")
    assert trained.status == "pass"
    weights = tmp_path / "trained" / "stages" / "01-train" / "model.safetensors"
    wrong = tiny_recipe(tmp_path, **{"stages": [], "model.weights": str(weights), "model.input.mean": [0.0],
                                     "model.input.std": [1.0], "latency.enabled": False, "check.enabled": False})
    rc = main(["validate", str(write_recipe(tmp_path, wrong)), "--out", str(tmp_path / "wrong")])
    report = load_report(tmp_path / "wrong")
    assert rc == 4 and report["status"] == "fail"
    reference = [line for line in report["failed_gates"] if line.startswith("reference: ")]
    assert len(reference) == 1 and "near chance" in reference[0] and "mean/std" in reference[0]  # said once
    assert not any("near chance" in line for line in report["failed_gates"] if line not in reference)
