"""The shared Trainer: resume is exact, early stopping and restore-best work, DDP ranks end identical."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgeship.training.config import TrainerConfig
from edgeship.training.supervised import CrossEntropyObjective
from edgeship.training.trainer import CHECKPOINT, Trainer
from tests.conftest import ROOT


def _data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def _weights(m: nn.Module) -> list[torch.Tensor]:
    return [v.clone() for v in m.state_dict().values()]


CFG = TrainerConfig(epochs=4, batch_size=16, lr=0.05, optimizer="sgd", warmup_epochs=1, restore_best=False)


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    x, y = _data()
    straight = _model()
    Trainer(CFG, workdir=tmp_path / "a", seed=3, log=lambda _m: None).fit(CrossEntropyObjective(straight), x, y)

    def crash(epoch: int) -> dict:
        if epoch == 3:
            raise KeyboardInterrupt
        return {}

    interrupted = _model()
    with pytest.raises(KeyboardInterrupt):
        Trainer(CFG, workdir=tmp_path / "b", seed=3, log=lambda _m: None, evaluate=crash,
                fingerprint="k").fit(CrossEntropyObjective(interrupted), x, y)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["epoch"] == 2
    resumed = _model()
    lines: list[str] = []
    history = Trainer(CFG, workdir=tmp_path / "b", seed=3, log=lines.append, resume=True,
                      fingerprint="k").fit(CrossEntropyObjective(resumed), x, y)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert any("resumed" in line for line in lines)
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_replaced_behind_edgeships_back_is_not_resumed(tmp_path):
    x, y = _data()

    def crash(epoch: int) -> dict:
        if epoch == 3:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        Trainer(CFG, workdir=tmp_path, seed=3, log=lambda _m: None, evaluate=crash, fingerprint="k").fit(
            CrossEntropyObjective(_model()), x, y)
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # loadable, same fingerprint, altered weights
    ckpt["objective"] = {k: torch.zeros_like(v) for k, v in ckpt["objective"].items()}
    torch.save(ckpt, tmp_path / CHECKPOINT)
    lines: list[str] = []
    history = Trainer(CFG, workdir=tmp_path, seed=3, log=lines.append, resume=True, fingerprint="k").fit(
        CrossEntropyObjective(_model()), x, y)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert any("does not carry this machine's signature" in line for line in lines)


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    x, y = _data()
    Trainer(CFG, workdir=tmp_path, seed=0, log=lambda _m: None, fingerprint="old").fit(
        CrossEntropyObjective(_model()), x, y)
    lines: list[str] = []
    history = Trainer(CFG, workdir=tmp_path, seed=0, log=lines.append, resume=True, fingerprint="new").fit(
        CrossEntropyObjective(_model()), x, y)
    assert len(history) == 4 and any("another configuration" in line for line in lines)


@pytest.mark.parametrize(("scores", "stops_after"), [([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 3),
                                                      ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 6)])
def test_early_stop_on_a_plateau_only(scores, stops_after):
    x, y = _data()
    cfg = CFG.model_copy(update={"epochs": 6, "early_stop_patience": 2})
    history = Trainer(cfg, workdir=None, seed=0, log=lambda _m: None, monitor="agreement",
                      evaluate=lambda e: {"agreement": scores[e - 1]}).fit(CrossEntropyObjective(_model()), x, y)
    assert len(history) == stops_after


def test_restore_best_returns_the_best_epochs_weights():
    x, y = _data()
    model = _model()
    snapshots = {}

    def evaluate(epoch: int) -> dict:
        snapshots[epoch] = _weights(model)
        return {"agreement": 1.0 if epoch == 2 else 0.5}

    cfg = CFG.model_copy(update={"restore_best": True})
    Trainer(cfg, workdir=None, seed=0, log=lambda _m: None, monitor="agreement", evaluate=evaluate).fit(
        CrossEntropyObjective(model), x, y)
    for a, b in zip(_weights(model), snapshots[2], strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(_weights(model), snapshots[4], strict=True))


def _learning_rates(cfg, steps: int, total: int) -> list[float]:
    """The learning rate at each of ``steps`` optimizer steps, then the one after the last."""
    from edgeship.training.trainer import _optimizer, _scheduler

    opt = _optimizer(cfg, list(_model().parameters()))
    sched = _scheduler(cfg, opt, steps_per_epoch=2, total=total)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return [*lrs, opt.param_groups[0]["lr"]]


def test_schedules_warm_up_then_decay_or_hold():
    for schedule, last in (("cosine", 0.0), ("constant", 0.05)):
        lrs = _learning_rates(CFG.model_copy(update={"schedule": schedule, "warmup_epochs": 1}), 4, total=4)
        assert lrs[0] == pytest.approx(0.025) and lrs[1] == pytest.approx(0.05)
        assert lrs[-1] == pytest.approx(last, abs=1e-9)
    cfg = CFG.model_copy(update={"schedule": "cosine_restarts", "restart_epochs": 2, "warmup_epochs": 0})
    period = [0.05 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert _learning_rates(cfg, 9, total=12) == pytest.approx(period * 2 + period[:2])  # restarts every 4 steps


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(r["world"] == 2 and r["epochs"] == 2 for r in ranks)
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k
    torch.manual_seed(1)
    from edgeship.zoo import digits_cnn

    initial = digits_cnn(width=4).state_dict()
    assert not torch.equal(initial["0.weight"], ranks[0]["state"]["0.weight"])  # it trained
    assert (tmp_path / "work" / CHECKPOINT).is_file()  # rank 0 wrote the checkpoint


def test_edgeship_run_under_torchrun_trains_with_ddp_and_rank_0_reports(tmp_path):
    from tests.conftest import load_report, tiny_recipe, write_recipe

    recipe = tiny_recipe(tmp_path, stages=[{"type": "train", "epochs": 2, "lr": 0.01},
                                           {"type": "prune", "criterion": "l1", "target_macs": 0.6},
                                           {"type": "distill", "trainer": {"epochs": 2}}],
                         **{"export.formats": ["onnx"], "latency.enabled": False})
    path = write_recipe(tmp_path, recipe)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "edgeship.cli", "run", str(path)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = load_report(tmp_path / "runs" / "tiny")
    assert report["stages"][2]["metrics"]["processes"] == 2
    assert report["results"][0]["metrics"]["top1_agreement"] == 1.0
    assert proc.stdout.count("edgeship · tiny · PASS") == 1  # one summary, from rank 0


@pytest.mark.parametrize("precise", [False, True])
def test_precise_bn_recomputes_statistics_that_lag_behind_training(tmp_path, precise):
    """BN momentum 0: running statistics never follow training (the extreme of mobilenet_v3's 0.01), so eval-mode
    accuracy is poor; ``precise_bn`` recomputes them over the train split and the trained model works."""
    from edgeship.calibration.splits import make_splits
    from edgeship.core.artifact import InputSpec
    from edgeship.stage import ModelState, StageContext
    from edgeship.stages.train import TrainConfig, TrainStage
    from edgeship.zoo import digits_cnn

    torch.manual_seed(0)
    model = digits_cnn()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = 0.0
    splits = make_splits("digits", "digits", 64, 200, 0, (1, 12, 12), (0.5,), (0.5,))
    spec = InputSpec(shape=(1, 1, 12, 12), mean=(0.5,), std=(0.5,), num_classes=10)
    result = TrainStage(TrainConfig(type="train", epochs=4, lr=0.01, precise_bn=precise)).run(
        ModelState(model=model, spec=spec), StageContext(tmp_path, splits, 0, lambda m: None))
    accuracy = result.metrics["val_accuracy"]
    if precise:
        assert result.metrics["precise_bn"] == 3 and accuracy > 0.9
    else:
        assert accuracy < 0.6


def test_ctrl_c_during_the_train_stage_then_resume_continues_from_the_last_epoch(tmp_path):
    import edgeship
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path, **{"stages": [{"type": "train", "epochs": 4, "lr": 0.01}],
                                      "export.formats": ["onnx"], "latency.enabled": False,
                                      "validate.cross_check": False, "check.enabled": False})

    def interrupt_in_epoch_3(line: str) -> None:
        if "epoch 3/4" in line:  # epoch 3 trained, its checkpoint not yet written: Ctrl-C lands here
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        edgeship.run(recipe, out=tmp_path / "run", log=interrupt_in_epoch_3)
    lines: list[str] = []
    resumed = edgeship.run(recipe, out=tmp_path / "run", resume=True, log=lines.append)
    assert any("resumed from" in line and "after epoch 2" in line for line in lines)
    assert not any("epoch 1/4" in line or "epoch 2/4" in line for line in lines)  # not restarted at epoch 1
    straight = edgeship.run(recipe, out=tmp_path / "straight")
    history = resumed.report["stages"][0]["metrics"]["epochs"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # The seeded batch order and RNG states travel in the checkpoint: the interrupted run ends where one run ends.
    assert history == straight.report["stages"][0]["metrics"]["epochs"]
    assert resumed.status == "pass"


def test_validate_resume_keeps_the_latency_a_profiled_run_measured(tmp_path):
    from edgeship.cli import main
    from tests.conftest import load_report, tiny_recipe, write_recipe

    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path, **{"export.formats": ["onnx"], "check.enabled": False,
                                                             "validate.cross_check": False}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    before = {r["runtime"]: r for r in load_report(tmp_path / "run")["results"]}
    assert main(["validate", str(recipe), "--out", str(tmp_path / "run"), "--resume"]) == 0
    after = load_report(tmp_path / "run")
    rows = {r["runtime"]: r for r in after["results"]}
    assert rows["onnxruntime"]["latency"] == before["onnxruntime"]["latency"]  # not silently dropped
    assert after["pytorch_latency"] is not None
    assert any("latency" in n and "kept from the previous report" in n for n in after["notes"])
