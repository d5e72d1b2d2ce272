"""Distillation: loss math, per-epoch label metrics, the tuner, born-again/TA teachers, train-only heads
never exported, and bad distill configs."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from edgeship.distill.config import DistillConfig, LossSpec
from edgeship.distill.engine import carve_holdout, distill_once, tune_label_preservation
from edgeship.distill.losses import Outputs, ProjectorRegression, SimilarityPreserving, kd_loss
from edgeship.distill.objective import DistillObjective
from edgeship.metrics import label_metrics
from edgeship.zoo import digits_cnn
from tests.conftest import gated_results, load_report, tiny_recipe, write_recipe


def test_kd_is_batchmean_t_squared_kl():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    manual = (torch.softmax(t / 4, 1) * (torch.log_softmax(t / 4, 1) - torch.log_softmax(s / 4, 1))).sum(1).mean()
    assert kd_loss(s, t, 4.0).item() == pytest.approx(16 * manual.item(), rel=1e-5)


def test_standardized_kd_ignores_the_logit_scale_and_shift_but_not_the_relations():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(8, 10, generator=g)
    rescaled = 0.3 * t + 5.0  # a small student's logits: same relations, another range
    assert kd_loss(rescaled, t, 2.0, standardized=True).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(rescaled, t, 2.0).item() > 0.1  # plain KD asks for the teacher's scale too
    assert kd_loss(torch.randn(8, 10, generator=g), t, 2.0, standardized=True).item() > 0.1


def test_similarity_preserving_compares_batch_gram_matrices_of_any_width():
    sp = SimilarityPreserving("s", "t")
    f = torch.randn(6, 4, 3, 3)
    same = Outputs(torch.zeros(6, 2), torch.zeros(6, 2), None, {"s": f}, {"t": torch.cat([f, f], 1)})
    assert sp(same).item() == pytest.approx(0.0, abs=1e-6)  # duplicated channels: same similarities
    other = Outputs(torch.zeros(6, 2), torch.zeros(6, 2), None, {"s": f}, {"t": torch.randn(6, 16, 2, 2)})
    gs, gt = sp.gram(f), sp.gram(other.teacher_features["t"])
    assert sp(other).item() == pytest.approx(((gs - gt) ** 2).sum().item() / 36, rel=1e-5)


def test_projector_ensemble_has_three_heads_and_cosine_distance():
    p = ProjectorRegression("s", "t", 4, 6, "ensemble", "cosine")
    assert len(p.projectors) == 3
    o = Outputs(torch.zeros(2, 2), torch.zeros(2, 2), None, {"s": torch.randn(5, 4, 3, 3)}, {"t": torch.randn(5, 6)})
    assert 0.0 <= p(o).item() <= 2.0


def test_label_metrics_follow_methods_md():
    ref = np.eye(3)[[0, 1, 2, 0, 1]]
    out = np.eye(3)[[0, 2, 2, 1, 1]]
    labels = np.array([0, 1, 0, 0, 2])  # reference correct on samples 0, 1, 3
    m = label_metrics(out, ref, labels)
    assert m["mismatches"] == 2 and m["agreement"] == pytest.approx(0.6)
    assert m["mismatch_when_reference_correct"] == pytest.approx(2 / 3)
    assert m["mismatches_when_reference_correct"] == 2
    assert m["per_class_flip_rate"] == {"0": 0.5, "1": 0.5, "2": 0.0}


def _digits_data(seed: int = 0):
    from edgeship.calibration.splits import make_splits

    s = make_splits("digits", "digits", 64, 96, seed, (1, 12, 12), (0.5,), (0.5,))
    return carve_holdout(s.train.x[:400], s.train.y[:400], 0.2, seed, s.validation.x, s.validation.y)


def test_feature_heads_train_and_hooks_are_removed():
    data = _digits_data()
    torch.manual_seed(0)
    teacher, student = digits_cnn(width=8), digits_cnn(width=4)
    cfg = DistillConfig(type="distill", method="custom", holdout=0.2, hint_epochs=1,
                        losses=[{"type": "hint", "student": "3", "teacher": "3"},
                                {"type": "projector", "student": "9", "teacher": "9", "kind": "mlp"},
                                {"type": "similarity", "student": "9", "teacher": "9"}],
                        trainer={"epochs": 2, "batch_size": 32})
    before = copy.deepcopy(student.state_dict())
    history = distill_once(student, teacher, cfg.method_terms(), data, cfg, cfg.trainer, seed=0, workdir=None,
                           log=lambda _m: None)
    assert {"loss_hint", "loss_projector", "loss_similarity", "agreement", "mismatch_when_reference_correct",
            "per_class_flip_rate", "holdout_agreement"} <= set(history[-1])
    assert not torch.equal(before["3.weight"], student.state_dict()["3.weight"])
    assert all(not m._forward_hooks for m in list(student.modules()) + list(teacher.modules()))
    assert set(student.state_dict()) == set(before)  # no head leaked into the student


def test_unknown_feature_module_is_a_config_error():
    from edgeship.core.errors import ConfigError

    with pytest.raises(ConfigError, match="no module named 'nope'.*modules: 0, 1"):
        DistillObjective(digits_cnn(), digits_cnn(), [LossSpec(type="hint", student="nope", teacher="3")],
                         torch.zeros(2, 1, 12, 12))


def test_tuner_picks_the_fewest_held_out_mismatches():
    data = _digits_data()
    torch.manual_seed(0)
    teacher, student = digits_cnn(width=8), digits_cnn(width=4)
    cfg = DistillConfig(type="distill", method="label_preservation", holdout=0.2,
                        tune={"alpha": [0.5, 2.0], "beta": [0.0, 1.0], "temperature": [1.0], "trials": 3, "epochs": 1,
                              "refit": False},
                        trainer={"epochs": 3, "batch_size": 32})
    before = copy.deepcopy(student.state_dict())
    result = tune_label_preservation(student, teacher, data, cfg, seed=0, log=lambda _m: None)
    assert len(result.trials) == 3
    assert result.chosen["holdout_mismatches"] == min(t["holdout_mismatches"] for t in result.trials)
    assert result.student is None  # 1-epoch trials are shorter than the schedule: the winner is retrained
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())  # trials train copies


def test_method_presets():
    lp = DistillConfig(type="distill", method="label_preservation", alpha=2, beta=0.5, temperature=3)
    assert [(s.type, s.weight) for s in lp.method_terms()] == [("ce", 1.0), ("kd", 2.0), ("logit_mse", 0.5)]
    assert not lp.method_terms()[1].standardize  # the loss as the paper writes it, unless asked
    assert DistillConfig(type="distill", method="label_preservation",
                         standardize=True).method_terms()[1].standardize
    fm = DistillConfig(type="distill", method="function_matching")
    assert [(s.type, s.temperature) for s in fm.method_terms()] == [("kd", 1.0)]
    assert fm.augment_mode == "shift+mixup"
    with pytest.raises(ValueError, match="custom needs"):
        DistillConfig(type="distill", method="custom")
    with pytest.raises(ValueError, match="needs 'student' and 'teacher'"):
        LossSpec(type="hint", student="3")


def _prune_distill_recipe(tmp_path, distill: dict, formats: list[str]) -> dict:
    return tiny_recipe(tmp_path, stages=[
        {"type": "train", "epochs": 3, "lr": 0.01},
        {"type": "prune", "criterion": "l1", "target_macs": 0.5},
        {"type": "distill", "trainer": {"epochs": 2, "lr": 0.01}, **distill},
    ], **{"export.formats": formats})


def test_prune_then_distill_exports_only_the_student(tmp_path, capsys):
    from edgeship.cli import main

    recipe = _prune_distill_recipe(tmp_path, {"method": "kd", "losses": [
        {"type": "hint", "student": "3", "teacher": "3", "weight": 10},
        {"type": "projector", "student": "9", "teacher": "9"}]}, ["onnx", "tflite", "openvino"])
    assert main(["run", str(write_recipe(tmp_path, recipe))]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    for row in gated_results(run_dir).values():
        assert row["metrics"]["top1_agreement"] == 1.0
    stage = load_report(run_dir)["stages"][2]
    assert stage["metrics"]["student_macs"] < stage["metrics"]["teacher_macs"]
    epochs = stage["metrics"]["generations"][0]["epochs"]
    assert len(epochs) == 2 and "mismatch_when_reference_correct" in epochs[-1]
    # the ONNX file holds exactly the student's parameters (BN folded or not): no regressor, no projector
    model = onnx.load(run_dir / "artifacts" / "model.onnx")
    onnx_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    from edgeship.structure import load_structured

    student = digits_cnn()
    load_structured(student, run_dir / "stages" / "02-prune" / "model.safetensors",
                    run_dir / "stages" / "02-prune" / "structure.json")
    assert onnx_params <= sum(p.numel() for p in student.state_dict().values())
    assert "regressor" not in str([t.name for t in model.graph.initializer])


def test_born_again_and_teacher_assistant_chain(tmp_path):
    from edgeship.cli import main

    recipe = tiny_recipe(tmp_path, stages=[
        {"type": "train", "epochs": 3, "lr": 0.01},
        {"type": "prune", "criterion": "l1", "target_macs": 0.6},
        {"type": "distill", "trainer": {"epochs": 1}},                       # teacher -> assistant
        {"type": "prune", "criterion": "l1", "target_macs": 0.6},
        {"type": "distill", "teacher": "previous_distill", "trainer": {"epochs": 1}},   # assistant -> student
        {"type": "distill", "teacher": "stage_input", "reinit": True, "generations": 2, "trainer": {"epochs": 1}},
    ], **{"export.formats": ["onnx"], "validate.enabled": False, "latency.enabled": False})
    assert main(["run", str(write_recipe(tmp_path, recipe))]) == 0
    stages = load_report(tmp_path / "runs" / "tiny")["stages"]
    first, chain, born = stages[2]["metrics"], stages[4]["metrics"], stages[5]["metrics"]
    assert chain["teacher_macs"] == first["student_macs"] > chain["student_macs"]  # the assistant taught
    assert born["teacher_macs"] == born["student_macs"] and len(born["generations"]) == 2


def test_distill_on_unlabeled_data_needs_a_label_free_method(tmp_path, capsys):
    from edgeship.cli import main

    recipe = _prune_distill_recipe(tmp_path, {"method": "label_preservation"}, ["onnx"])
    recipe["stages"][0] = {"type": "prune", "criterion": "l1", "target_macs": 0.6}
    recipe["stages"][1] = recipe["stages"][2]
    recipe["stages"].pop()
    recipe["data"] = {"calibration": {"source": "synthetic", "samples": 64},
                      "validation": {"source": "synthetic", "samples": 32}}
    assert main(["run", str(write_recipe(tmp_path, recipe))]) == 2
    err = capsys.readouterr().err
    assert "uses labels" in err and "function_matching" in err and "Traceback" not in err


def test_decisions_need_held_out_rows():
    with pytest.raises(ValueError, match="holdout must be > 0"):
        DistillConfig(type="distill", method="label_preservation", holdout=0.0)
    with pytest.raises(ValueError, match="holdout must be > 0"):
        DistillConfig(type="distill", holdout=0.0, trainer={"early_stop_patience": 2})
    assert DistillConfig(type="distill").holdout_fraction == 0.0  # no decision: every row trains
    assert DistillConfig(type="distill", method="label_preservation").holdout_fraction == 0.15


def test_distill_after_quantize_is_an_error(tmp_path, capsys):
    from edgeship.cli import main

    recipe = tiny_recipe(tmp_path, stages=[{"type": "quantize"}, {"type": "distill"}],
                         **{"latency.enabled": False, "export.formats": ["onnx"]})
    assert main(["run", str(write_recipe(tmp_path, recipe))]) == 2
    assert "distill must come before quantize" in capsys.readouterr().err


@pytest.mark.parametrize("refit", [True, False])
def test_tuned_student_refits_on_the_held_out_rows_too(tmp_path, refit):
    """The held-out rows only choose (α, β, T): with refit the final student trains on every row."""
    from edgeship.cli import main

    tune = {"alpha": [1.0], "beta": [0.1], "temperature": [2.0], "trials": 1, "refit": refit}
    recipe = _prune_distill_recipe(tmp_path, {"method": "label_preservation", "tune": tune}, ["onnx"])
    recipe["validate"] = {"enabled": False}
    assert main(["run", str(write_recipe(tmp_path, recipe))]) == 0
    stages = load_report(tmp_path / "runs" / "tiny")["stages"]
    every_row = stages[0]["metrics"]["train_samples"]
    assert len(stages[2]["metrics"]["tuning"]["trials"]) == 1
    expected = every_row if refit else every_row - round(0.15 * every_row)
    assert stages[2]["metrics"]["train_rows"] == expected
