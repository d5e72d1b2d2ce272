"""Android over adb: the benchmark_model parser on captured output, and the command lines for a serial."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.recipe import Recipe
from edgeship.targets.adb import AdbDevice, benchmark_argv, parse_benchmark_output
from edgeship.targets.devices import DeviceConfig, DeviceError, connect
from edgeship.targets.hotspots import litert_module

DATA = Path(__file__).parent / "data" / "benchmark_model"


def test_parses_the_readme_sample_run_order_only():
    """The Run Order table gives every op once (Top by Computation Time repeats ten of them); latency in ms."""
    answer = parse_benchmark_output((DATA / "readme_mobilenet_quant_v1.txt").read_text())
    ops = answer["op_profile"]["ops"]
    assert len(ops) == 31  # "Number of nodes executed: 31"
    assert ops[0] == {"type": "CONV_2D", "ms": 4.269, "name": "MobilenetV1/MobilenetV1/Conv2d_0/Relu6"}
    assert ops[-1]["type"] == "SOFTMAX"
    assert sum(o["type"] == "CONV_2D" for o in ops) == 15 and sum(o["type"] == "DEPTHWISE_CONV_2D" for o in ops) == 13
    lat = answer["latency"]
    assert lat["timed_calls"] == 50 and lat["mean"] == pytest.approx(79.732) and lat["min"] == pytest.approx(77.385)
    assert lat["p50"] == lat["mean"] and "mean" in lat["statistic"]  # no percentiles in its output: said so
    # The ops' sum against the run's mean: what coverage reports (the sample's ops sum to 79.4 of 79.7 ms).
    assert sum(o["ms"] for o in ops) / lat["mean"] == pytest.approx(0.996, abs=0.002)


def test_parses_a_newer_binarys_header_and_says_when_there_is_no_op_table():
    """The last count= line is the regular runs (the first is warm-up); Init and peak memory are read."""
    answer = parse_benchmark_output((DATA / "tf42507_android_head.txt").read_text())
    assert answer["latency"]["timed_calls"] == 50 and answer["latency"]["mean"] == pytest.approx(33.2094)
    assert answer["load_seconds"] == pytest.approx(0.000855) and answer["peak_rss_mb"] == pytest.approx(12.8672)
    # Only the initialisation's heading follows: no op rows, and the answer says so instead of an empty table.
    assert "error" in answer["op_profile"]


def test_refuses_output_of_a_run_that_did_not_finish():
    with pytest.raises(ValueError, match="count="):
        parse_benchmark_output("STARTING!\nLoaded model /data/local/tmp/m.tflite\nSegmentation fault\n")


def test_command_lines_name_the_serial(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    device = connect(DeviceConfig(adb="R58M42", benchmark_model=str(binary)))
    assert isinstance(device, AdbDevice) and device.url == "adb://R58M42"
    assert device.argv("push", "a", "b") == ["adb", "-s", "R58M42", "push", "a", "b"]
    assert benchmark_argv("/data/local/tmp/edgeship/x-benchmark_model", "/data/local/tmp/edgeship/m.tflite", 4, 5,
                          30) == ["/data/local/tmp/edgeship/x-benchmark_model",
                                  "--graph=/data/local/tmp/edgeship/m.tflite", "--num_threads=4", "--warmup_runs=5",
                                  "--num_runs=30", "--enable_op_profiling=true"]


def test_bad_adb_configs_are_clear(tmp_path):
    with pytest.raises(DeviceError, match="benchmark_model is required"):
        connect(DeviceConfig(url="adb://R58M42"))
    with pytest.raises(DeviceError, match="no file at"):
        connect(DeviceConfig(adb="R58M42", benchmark_model=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="two devices"):
        Recipe.model_validate({"name": "x", "model": {"source": "torchvision:resnet18", "input": {
            "shape": [1, 3, 32, 32], "num_classes": 10}}, "device": {"adb": "A", "url": "ssh://pi@board"}})


def test_onnxruntime_is_refused_on_a_phone(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    device = AdbDevice(DeviceConfig(adb="R58M42", benchmark_model=str(binary)))
    with pytest.raises(DeviceError, match="LiteRT through benchmark_model only"):
        device.execute({"runtime": "onnxruntime"}, [tmp_path / "m.onnx"], None)


def test_litert_module_names_from_litert_torch_locations():
    name = ("torchvision.models.resnet.ResNet/torch.nn.modules.container.Sequential_layer1/torchvision.models.resnet"
            ".BasicBlock_0/torch.nn.modules.activation.ReLU_relu;;torchvision.models.resnet.ResNet/torch.nn.modules"
            ".container.Sequential_layer1/torchvision.models.resnet.BasicBlock_0/torch.nn.modules.conv.Conv2d_conv1;1")
    assert litert_module(name, compute=True) == "layer1.0.conv1"
    assert litert_module(name, compute=False) == "layer1.0.relu"
    assert litert_module("MobilenetV1/MobilenetV1/Conv2d_0/Relu6", compute=True) is None  # not litert-torch's
