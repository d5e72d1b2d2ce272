"""Latency lookup tables measured on the runtime, latency-target pruning, and `edgeship latency-table`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from edgeship.cli import main
from edgeship.core.artifact import InputSpec
from edgeship.core.errors import ConfigError
from edgeship.prune import latency_table as lt
from edgeship.prune.latency_aware import group_change
from edgeship.recipe import parse_recipe
from edgeship.stages.prune import chosen_attempt
from edgeship.zoo import digits_resnet
from tests.conftest import load_report, tiny_recipe, write_recipe

SPEC = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESHIP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def latency_recipe(tmp, **prune: object) -> dict:
    stage = {"type": "prune", "criterion": "l1", "target_latency": 0.7, "round_to": 4, "latency_runtime": "onnxruntime",
             "latency_table": {"samples": 4, "repeats": 1, "refine": 1}, **prune}
    return tiny_recipe(tmp, stages=[{"type": "train", "epochs": 2, "lr": 0.01}, stage],
                       **{"model.source": "edgeship.zoo:digits_resnet",
                          "model.input.shape": [1, 1, 16, 16], "export.formats": ["onnx"],
                          "validate.gates.reference_accuracy_min": None})


def test_group_change_matches_what_pruning_the_group_does():
    # The pruner predicts each candidate from the channel counts it would leave; they must be the real ones,
    # for residual groups (several convs share one channel set) and for convs fed by them.
    import torch_pruning as tp

    model = digits_resnet().eval()
    layers = lt.model_layers(model, SPEC)
    example = torch.zeros(SPEC.shape)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = {m: n for n, m in model.named_modules()}
    current = {n: (x.cin, x.cout) for n, x in layers.items()}
    classifier = [model[-1]]
    checked = 0
    for group in list(graph.get_all_groups(ignored_layers=classifier, root_module_types=[torch.nn.Conv2d])):
        expected = group_change(group, names, current, 4)
        graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, list(range(4))).prune()
        after = lt.model_layers(model, SPEC)
        current = {n: (x.cin, x.cout) for n, x in after.items()}
        assert expected == current
        checked += 1
    assert checked >= 5


def test_a_table_is_measured_on_the_runtime_cached_and_reused(tmp_path, cache):
    model = digits_resnet().eval()
    timing = lt.TimingTarget.of(None, 1, warmup=2, runs=10)
    table = timing.table("onnxruntime")
    layers = lt.model_layers(model, SPEC)
    key = lt.model_key(layers, SPEC)
    assert not table.knows(key)
    lines: list[str] = []
    lt.measure_table(table, model, SPEC, [model[-1]], timing, samples=3, round_to=4, repeats=1, seed=0,
                     workdir=tmp_path, log=lines.append)
    table.save()
    assert len([m for m in lines if "round 1/1" in m]) == 3
    again = timing.table("onnxruntime")  # read back from the cache: nothing to measure
    assert again.path == table.path and again.knows(key) and str(again.path).startswith(str(cache))
    summary = again.summary(key, layers)
    assert [s["label"] for s in summary["samples"]] == ["uniform 1", "uniform 0.75", "uniform 0.5"]
    assert all(s["p50_ms"] > 0 and len(s["process_p50s"]) == 1 for s in summary["samples"])
    # every layer was credited its in-graph time, and the fit never predicts more time for fewer channels
    assert all(x["points"] >= 3 for x in summary["layers"])
    full = again.predict(key, layers)
    assert again.predict(key, layers, {"3.conv1": (32, 8)}) <= full
    assert summary["predicted_half_ms"] <= full
    # a table file cut short or written by another version is measured again, not trusted
    table.path.write_text('{"version": 0')
    assert not lt.TimingTarget.of(None, 1).table("onnxruntime").knows(key)


def test_chosen_attempt_is_the_least_pruned_that_measured_within_target():
    def attempt(measured: float) -> dict:
        return {"target_ratio": 0.5, "measured_ratio": measured}

    assert chosen_attempt([attempt(0.6), attempt(0.52), attempt(0.4)], 0.1) == 1
    assert chosen_attempt([attempt(0.7), attempt(0.62)], 0.1) == 1  # none met it: the fastest
    assert chosen_attempt([attempt(0.45)], 0.1) == 0


@pytest.mark.parametrize(("prune", "message"), [
    ({"target_macs": 0.5}, "exactly one of"),
    ({"heads_ratio": 0.25}, "heads_ratio"),
    ({"latency_runtime": "tensorrt"}, "latency_runtime"),
    ({"latency_table": {"samples": 1}}, "samples"),
])
def test_bad_latency_settings_are_named(tmp_path, prune, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(latency_recipe(tmp_path, **prune))


def test_latency_target_pruning_end_to_end(tmp_path, cache):
    recipe = write_recipe(tmp_path, latency_recipe(tmp_path))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    report = load_report(tmp_path / "run")
    lat = report["stages"][1]["metrics"]["latency"]
    assert lat["runtime"] == "onnxruntime" and lat["table_measured_now"] and lat["threads"] == 1
    assert lat["table_samples"] >= 4 and 1 <= len(lat["attempts"]) <= 2
    assert lat["predicted_ms"] <= lat["target_ms"] * 1.001 and lat["reached"] is True
    assert report["stages"][1]["metrics"]["macs_ratio"] < 1
    # the stage's own check and the run's artifact: both measured against the unpruned model on onnxruntime
    for figures in (lat["attempts"][lat["chosen_attempt"] - 1], lat["artifact"]):
        assert figures["measured_ratio"] > 0
        assert figures["error"] == pytest.approx(figures["predicted_ratio"] / figures["measured_ratio"] - 1, abs=1e-3)
    assert lat["artifact"]["row"] == "onnxruntime"
    page = (tmp_path / "run" / "report.html").read_text()
    assert "stage check, attempt 1" in page and "this run&#x27;s artifact (onnxruntime)" in page
    # the table it measured is in the cache: a second run measures none
    assert main(["run", str(recipe), "--out", str(tmp_path / "again")]) == 0
    assert not load_report(tmp_path / "again")["stages"][1]["metrics"]["latency"]["table_measured_now"]


def test_latency_table_command(tmp_path, cache, capsys):
    recipe = write_recipe(tmp_path, latency_recipe(tmp_path))
    out = tmp_path / "table.json"
    assert main(["latency-table", str(recipe), "--runtime", "onnxruntime", "--samples", "3",
                 "--save", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["runtime"] == "onnxruntime" and summary["model"] == "edgeship.zoo:digits_resnet"
    assert {x["layer"] for x in summary["layers"]} >= {"0.0", "3.conv2", "6"}
    assert len(summary["samples"]) == 3
    printed = capsys.readouterr().out
    assert "latency table" in printed and "uniform 0.5" in printed
    assert main(["latency-table", str(recipe), "--runtime", "tensorrt"]) == 2
    assert "--runtime: expected one of onnxruntime, openvino, litert" in capsys.readouterr().err


def test_training_survives_onednn_strided_pointwise_bug(tmp_path):
    # oneDNN (torch 2.14.1) crashes the process in the backward pass of a strided 1x1 conv fed channels-last
    # activations with fewer input channels than its block, at odd batch sizes: what a pruned ResNet's shortcut
    # is. The trainer feeds such layers NCHW; without that, this child process dies with SIGSEGV.
    script = """
import numpy as np, torch
from torch import nn
from edgeship.training.supervised import train_supervised
class ChannelsLast(nn.Module):
    def forward(self, x):
        return x.contiguous(memory_format=torch.channels_last)
model = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1), ChannelsLast(), nn.Conv2d(12, 12, 1, stride=2, bias=False),
                      nn.Flatten(), nn.Linear(12 * 64, 10))
rng = np.random.default_rng(0)
x, y = rng.standard_normal((71, 12, 16, 16)).astype(np.float32), rng.integers(0, 10, 71)
train_supervised(model, x, y, epochs=2, lr=0.01, batch_size=64, weight_decay=0.0, seed=0, log=lambda m: None)
print("trained")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]
