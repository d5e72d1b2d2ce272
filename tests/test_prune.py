"""prune stage: DepGraph-based channel removal, budgets, criteria, export and exact reload."""

from __future__ import annotations

import pytest

from edgeship.cli import main
from edgeship.core.errors import ConfigError
from edgeship.recipe import parse_recipe
from edgeship.stages.prune import PruneConfig, budget_notes
from tests.conftest import gated_results, load_report, tiny_recipe, write_recipe
from tests.models import tiny_vit


def prune_recipe(tmp, **prune: object) -> dict:
    return tiny_recipe(tmp, stages=[{"type": "train", "epochs": 3, "lr": 0.01}, {"type": "prune", **prune}],
                       **{"latency.enabled": False, "export.formats": ["onnx"],
                          # channel mechanics on a barely trained model that pruning leaves near chance
                          "validate.gates.reference_accuracy_min": None})


def run_prune(tmp, **prune: object) -> dict:
    assert main(["run", str(write_recipe(tmp, prune_recipe(tmp, **prune))), "--out", str(tmp / "run")]) == 0
    return load_report(tmp / "run")


@pytest.mark.parametrize("budget", [{}, {"ratio": 0.5, "target_macs": 0.5}, {"ratio": 1.5}])
def test_exactly_one_valid_budget(tmp_path, budget):
    with pytest.raises(ConfigError, match="stages.1"):
        parse_recipe(prune_recipe(tmp_path, **budget))


def test_ratio_removes_channels_in_multiples_of_round_to_and_protects_the_classifier(tmp_path):
    report = run_prune(tmp_path, criterion="l1", ratio=0.5, round_to=8)
    channels = {c["layer"]: c for c in report["stages"][1]["metrics"]["channels"]}
    assert [channels[n]["after"] for n in ("0", "3", "6")] == [8, 16, 32]
    assert channels["11"]["after"] == 10  # classifier outputs untouched
    assert report["stages"][1]["metrics"]["macs_ratio"] < 0.35
    assert report["results"][0]["metrics"]["top1_agreement"] == 1.0


@pytest.mark.parametrize("criterion", ["l2", "taylor", "random"])
def test_target_macs_is_reached(tmp_path, criterion):
    m = run_prune(tmp_path, criterion=criterion, target_macs=0.5)["stages"][1]["metrics"]
    assert m["macs_ratio"] <= 0.5 and m["macs_ratio"] > 0.3
    assert all(c["after"] % 8 == 0 or c["layer"] == "11" for c in m["channels"])


def test_a_budget_overshot_or_missed_is_a_note_and_round_to_1_meets_it(tmp_path):
    # digits_cnn's 16/32/64 channels in steps of 8: here the stage cannot stop between ~33% and ~19% of the MACs
    for sub in ("coarse", "fine"):
        (tmp_path / sub).mkdir()
    coarse = run_prune(tmp_path / "coarse", criterion="l1", target_macs=0.3, round_to=8)
    assert coarse["stages"][1]["metrics"]["macs_ratio"] < 0.27
    assert [n for n in coarse["notes"] if n.startswith("prune: target_macs 0.3 gave")]
    fine = run_prune(tmp_path / "fine", criterion="l1", target_macs=0.3, round_to=1)
    assert 0.27 <= fine["stages"][1]["metrics"]["macs_ratio"] <= 0.3
    assert not [n for n in fine["notes"] if n.startswith("prune:")]


@pytest.mark.parametrize(("target", "achieved", "expected"), [
    (0.1, 0.112, "target_macs 0.1 not reached: 11.2% after 7 steps"),
    (0.2, 0.112, "target_macs 0.2 gave 11.2%: the last step went from 30.0% to 11.2%"),
    (0.2, 0.19, None),  # within 10% of the budget
])
def test_budget_notes(target, achieved, expected):
    notes = budget_notes(PruneConfig(type="prune", target_macs=target), 8, 7, (achieved, 0.5), (0.3, 0.6))
    assert notes == [] if expected is None else expected in notes[0]


def test_budget_notes_name_max_steps_when_channels_are_single():
    cfg = PruneConfig(type="prune", target_params=0.5, max_steps=20)
    (note,) = budget_notes(cfg, None, 12, (0.2, 0.4), (0.3, 0.47))
    assert note.startswith("prune: target_params 0.5 gave 40.0%") and "max_steps 20 steps removes ~4.8%" in note


def test_bn_scale_with_network_slimming(tmp_path):
    m = run_prune(tmp_path, criterion="bn_scale", target_params=0.5,
                  slimming={"epochs": 1, "lam": 1e-4})["stages"][1]["metrics"]
    assert m["params_ratio"] <= 0.5


def test_pruned_model_exports_to_all_formats_and_reloads_exactly(tmp_path):
    recipe = prune_recipe(tmp_path, criterion="taylor", target_macs=0.4)
    recipe["export"] = {"formats": ["onnx", "tflite", "openvino"]}
    path, out = write_recipe(tmp_path, recipe), str(tmp_path / "run")
    assert main(["run", str(path), "--out", out]) == 0
    assert all(r["metrics"]["top1_agreement"] == 1.0 for r in gated_results(tmp_path / "run").values())
    first = load_report(tmp_path / "run")
    assert main(["run", str(path), "--out", out, "--resume", "--set", "export.formats=[onnx]"]) == 0
    second = load_report(tmp_path / "run")
    assert [s["reused"] for s in second["stages"]] == [True, True]
    # the pruned structure and weights came back from pruned.pt: byte-identical ONNX
    assert first["artifacts"]["onnx"]["sha256"] == second["artifacts"]["onnx"]["sha256"]


def test_prune_after_quantize_is_an_error(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, stages=[{"type": "quantize"}, {"type": "prune", "ratio": 0.5}],
                         **{"latency.enabled": False, "export.formats": ["onnx"],
                          # channel mechanics on a barely trained model that pruning leaves near chance
                          "validate.gates.reference_accuracy_min": None})
    assert main(["run", str(write_recipe(tmp_path, recipe))]) == 2
    assert "prune must come before quantize" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_structure_record_round_trips_pruned_torchvision_models(tmp_path, arch):
    import torch
    import torch_pruning as tp
    import torchvision

    from edgeship.structure import load_structured, save_structured

    model = torchvision.models.get_model(arch, num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64)
    tp.pruner.MetaPruner(model, x[:1], importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.3,
                         ignored_layers=[m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:],
                         round_to=8).step()
    save_structured(model, tmp_path / "w.safetensors", tmp_path / "s.json")
    fresh = load_structured(torchvision.models.get_model(arch, num_classes=10), tmp_path / "w.safetensors",
                            tmp_path / "s.json")
    with torch.inference_mode():
        assert torch.equal(fresh(x), model(x))


def test_pruned_run_times_the_unpruned_model_on_the_same_runtime(tmp_path):
    recipe = prune_recipe(tmp_path, criterion="l1", target_macs=0.5)
    recipe["latency"] = {"threads": 1, "warmup": 1, "runs": 10}
    assert main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")]) == 0
    row = next(r for r in load_report(tmp_path / "run")["results"] if r["runtime"] == "onnxruntime")
    assert row["speedup_vs_baseline"] == pytest.approx(row["baseline_latency"]["p50"] / row["latency"]["p50"],
                                                       rel=1e-2)
    assert (tmp_path / "run" / "artifacts" / "baseline" / "model.onnx").is_file()
    assert "Measured speed against the unpruned model" in (tmp_path / "run" / "report.html").read_text()


def test_vision_transformer_prunes_with_whole_heads_kept_and_round_trips(tmp_path):
    import torch
    import torchvision

    from edgeship.stages.prune import _attention_round_to, sync_derived_attributes
    from edgeship.structure import load_structured, save_structured

    def vit() -> torch.nn.Module:
        return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                    hidden_dim=64, mlp_dim=128, num_classes=10).eval()

    import torch_pruning as tp

    model = vit()
    assert _attention_round_to(model, 8) == 8 and _attention_round_to(model, 6) == 12
    x = torch.rand(2, 3, 32, 32)
    tp.pruner.MetaPruner(model, x[:1], importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.5,
                         ignored_layers=[model.heads.head], round_to=_attention_round_to(model, 8)).step()
    sync_derived_attributes(model)
    assert model.hidden_dim == model.conv_proj.out_channels == 32
    assert model.encoder.layers[0].self_attention.embed_dim % 4 == 0
    save_structured(model, tmp_path / "w.safetensors", tmp_path / "s.json")
    fresh = load_structured(vit(), tmp_path / "w.safetensors", tmp_path / "s.json")
    with torch.inference_mode():
        assert torch.equal(fresh(x), model(x))


def test_whole_attention_heads_are_removed_then_the_channel_budget(tmp_path):
    import torch

    from edgeship.attention import HeadAttention, split_attention
    from edgeship.stage import ModelState, StageContext
    from edgeship.stages.prune import PruneConfig, PruneStage

    def vit() -> torch.nn.Module:
        return tiny_vit().eval()

    # the split is exact before any pruning
    model, reference = vit(), vit()
    reference.load_state_dict(model.state_dict())
    split_attention(model)
    x = torch.rand(3, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)

    from edgeship.calibration.splits import make_splits
    from edgeship.core.artifact import InputSpec

    splits = make_splits("digits", "digits", 8, 8, 0, (3, 32, 32), (0.5,) * 3, (0.5,) * 3)
    spec = InputSpec(shape=(1, 3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=10)
    stage = PruneStage(PruneConfig(type="prune", criterion="l1", target_macs=0.6, heads_ratio=0.5))
    ctx = StageContext(workdir=tmp_path, splits=splits, seed=0, log=lambda _m: None)
    result = stage.run(ModelState(vit(), spec), ctx)
    pruned = result.state.model
    assert result.metrics["attention_heads"] == {"before": 8, "after": 4}
    assert result.metrics["macs_ratio"] <= 0.6
    atts = [m for m in pruned.modules() if isinstance(m, HeadAttention)]
    assert sum(a.num_heads for a in atts) == 4 and all(a.head_dim == 16 for a in atts)
    stage.save(result.state, ctx)
    restored = stage.load(ModelState(vit(), spec), ctx).model
    with torch.inference_mode():
        assert torch.equal(restored(x), pruned(x))


def test_head_pruned_vision_transformer_exports_to_all_formats(tmp_path):
    recipe = tiny_recipe(tmp_path, stages=[{"type": "train", "epochs": 2, "lr": 0.003},  # its head starts at zero
                                           {"type": "prune", "criterion": "l1", "target_macs": 0.6,
                                            "heads_ratio": 0.5}],
                         **{"model.source": "tests.models:tiny_vit", "model.input.shape": [1, 3, 32, 32],
                            "model.input.mean": [0.5, 0.5, 0.5], "model.input.std": [0.5, 0.5, 0.5],
                            "latency.enabled": False, "validate.gates.top1_agreement_min": 1.0})
    assert main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")]) == 0
    assert load_report(tmp_path / "run")["stages"][1]["metrics"]["attention_heads"] == {"before": 8, "after": 4}
    assert all(r["metrics"]["top1_agreement"] == 1.0 for r in gated_results(tmp_path / "run").values())


@pytest.mark.parametrize("method", ["finetune", "distill"])
def test_iterative_rounds_recover_between_steps(tmp_path, method):
    report = run_prune(tmp_path, criterion="l1", target_macs=0.4, iterative_steps=2,
                       recover={"method": method, "epochs": 1})
    m = report["stages"][1]["metrics"]
    assert m["rounds"] == 2 and len(m["recoveries"]) == 1
    assert 0.4 < m["recoveries"][0]["macs_ratio"] <= 0.75  # the first round stopped near its half of the budget
    assert m["macs_ratio"] <= 0.4 and len(m["recoveries"][0]["epochs"]) == 1


def test_heads_ratio_on_a_model_without_attention_is_a_config_error(tmp_path, capsys):
    assert main(["run", str(write_recipe(tmp_path, prune_recipe(tmp_path, target_macs=0.5, heads_ratio=0.5)))]) == 2
    assert "heads_ratio: the model has no nn.MultiheadAttention" in capsys.readouterr().err


def test_finetune_recovery_needs_labels(tmp_path, capsys):
    recipe = prune_recipe(tmp_path, target_macs=0.5, iterative_steps=2, recover={"method": "finetune"})
    recipe["stages"] = recipe["stages"][1:]
    recipe["data"] = {"calibration": {"source": "synthetic", "samples": 64},
                      "validation": {"source": "synthetic", "samples": 32}}
    assert main(["run", str(write_recipe(tmp_path, recipe))]) == 2
    assert "recover.method finetune needs labels" in capsys.readouterr().err


def test_an_interrupted_prune_resumes_each_recovery_round_from_its_checkpoint(tmp_path):
    import edgeship

    recipe = prune_recipe(tmp_path, ratio=0.5, iterative_steps=3, recover={"method": "finetune", "epochs": 2})
    recipe["validate"] = {"cross_check": False, "gates": {"reference_accuracy_min": None}}
    seen: list[str] = []

    def interrupt_in_round_2(line: str) -> None:
        seen.append(line)
        if "recover epoch 2/2" in line and any("round 2/3" in s for s in seen):
            raise KeyboardInterrupt  # round 2's second epoch trained, its checkpoint not yet written

    with pytest.raises(KeyboardInterrupt):
        edgeship.run(recipe, out=tmp_path / "run", log=interrupt_in_round_2)
    lines: list[str] = []
    resumed = edgeship.run(recipe, out=tmp_path / "run", resume=True, log=lines.append)
    resumes = [line for line in lines if "resumed from" in line]
    assert len(resumes) == 2 and "recover-round1" in resumes[0] and "after recover epoch 2" in resumes[0]
    assert "recover-round2" in resumes[1] and "after recover epoch 1" in resumes[1]
    straight = edgeship.run(recipe, out=tmp_path / "straight")
    prune = [s["metrics"] for s in resumed.report["stages"] if s["type"] == "prune"][0]
    assert prune == [s["metrics"] for s in straight.report["stages"] if s["type"] == "prune"][0]
