"""Model source forms, dynamic-batch export, and lean imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from edgeship.core.artifact import InputSpec
from edgeship.exporters.base import ExportContext
from edgeship.exporters.onnx import OnnxOptions, export_onnx
from edgeship.models import build_model
from edgeship.targets.onnxruntime import OnnxRuntimeSession
from edgeship.zoo import digits_cnn


def test_pt2_source_round_trips(tmp_path):
    model = digits_cnn().eval()
    x = torch.rand(1, 1, 16, 16)
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    loaded = build_model(str(path), 10)
    assert torch.allclose(loaded(x), model(x))


def test_file_factory_receives_num_classes(tmp_path):
    f = tmp_path / "net.py"
    f.write_text("from torch import nn\n\ndef make(num_classes):\n    return nn.Linear(4, num_classes)\n")
    assert build_model(f"{f}:make", 7).out_features == 7


def test_dynamic_batch_onnx_runs_whole_batches(tmp_path):
    model = digits_cnn().eval()
    spec = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
    artifact = export_onnx(model, spec, ExportContext(tmp_path, tmp_path / "logs", dynamic_batch=True), OnnxOptions())
    assert artifact.batch == -1
    x = np.random.default_rng(0).random((37, 1, 16, 16), dtype=np.float32)
    out = OnnxRuntimeSession(artifact, threads=1).run(x)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert out.shape == (37, 10) and np.abs(out - ref).max() < 1e-4


def test_float_tflite_carries_batch_norms_without_a_conv_as_depthwise_convs(tmp_path):
    """litert-torch lowers a BatchNorm no conv precedes to float SUB/MUL/ADD (archified convnext_tiny: 5 SUBs,
    int8-npu violations); the exporter converts it as one depthwise 1x1 conv, with the same outputs."""
    from edgeship.exporters import artifact_ops
    from edgeship.exporters.tflite import TFLiteOptions, export_tflite
    from edgeship.targets.litert import LiteRTSession
    from tests.models import randomize_batch_norms, standalone_bn_cnn

    torch.manual_seed(0)
    model = randomize_batch_norms(standalone_bn_cnn().eval())
    spec = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
    artifact = export_tflite(model, spec, ExportContext(tmp_path, tmp_path / "logs"), TFLiteOptions())
    assert artifact.details["batch_norms_as_depthwise"] == ["3"]  # model[1] follows a conv and is folded anyway
    ops = {u.op for u in artifact_ops(artifact.path)}
    assert "DEPTHWISE_CONV_2D" in ops and not ops & {"SUB", "MUL", "ADD"}, ops
    x = np.random.default_rng(0).random((8, 1, 16, 16), dtype=np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(LiteRTSession(artifact, threads=1).run(x) - ref).max() < 1e-4


def test_importing_edgeship_does_not_load_runtimes():
    code = ("import sys, edgeship, edgeship.cli, edgeship.recipe, edgeship.exporters, edgeship.targets, "
            "edgeship.calibration\n"
            "heavy = [m for m in ('tensorflow', 'openvino', 'onnxruntime', 'litert_torch', 'ai_edge_litert', 'torch')"
            " if m in sys.modules]\nprint(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_demo_recipe_is_found():
    from edgeship.cli import demo_recipe

    assert demo_recipe().name == "digits.yaml"


def test_weight_folding_skips_quantized_scalars_and_openvino_input_is_widened():
    """A quantized scalar constant (swin_t's attention has one) stays a Q/DQ chain; INT4 widens to INT8 as is."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeship.exporters.onnx_qdq import fold_weight_qdq, int4_tensor, widen_int4

    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "w"),
             numpy_helper.from_array(np.array(0.01, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             int4_tensor("q4", np.array([[-8, 7, -1]], np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
             helper.make_node("Mul", ["x", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert fold_weight_qdq(model) == {"folded": 0}
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "Mul"]
    assert widen_int4(model) == 1
    widened = next(t for t in model.graph.initializer if t.name == "q4")
    assert widened.data_type == TensorProto.INT8
    assert numpy_helper.to_array(widened).tolist() == [[-8, 7, -1]]
    assert widen_int4(model) == 0
    onnx.checker.check_model(model)
