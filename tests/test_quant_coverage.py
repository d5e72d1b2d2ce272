"""Quantization coverage of the op patterns torchvision's families add: same-scale ops and attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeship
from edgeship.quant.bits import resolve_bits
from edgeship.quant.config import QuantizeConfig


def annotated_graph(model: nn.Module, size: int) -> torch.fx.GraphModule:
    from edgeship.core.standalone_bn import standalone_batch_norms_to_depthwise
    from edgeship.quant.pt2e import build_quantizer, dynamic_batch_export

    cfg = QuantizeConfig()
    graph = dynamic_batch_export(model.eval(), torch.randn(2, 3, size, size))
    standalone_batch_norms_to_depthwise(graph)
    build_quantizer(cfg, resolve_bits(model, cfg)[0]).annotate(graph)
    return graph


def test_same_scale_ops_after_a_quantized_tensor_share_its_parameters():
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec
    from torchvision.models.densenet import DenseNet

    graph = annotated_graph(DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=8, bn_size=2), 32)
    kinds = ("avg_pool2d", "max_pool2d", "cat")
    nodes = [n for n in graph.graph.nodes if n.op == "call_function" and str(n.target).split(".")[1] in kinds]
    assert {str(n.target).split(".")[1] for n in nodes} == set(kinds)
    for n in nodes:
        if isinstance(n.args[0], list) and len(n.args[0]) < 2:
            continue  # a concatenation of one tensor is a copy
        ann = n.meta.get("quantization_annotation")
        assert ann is not None and isinstance(ann.output_qspec, SharedQuantizationSpec), n.name


def test_attention_matmuls_and_softmax_are_quantized_and_every_runtime_runs_them_in_int8(tmp_path):
    from torchvision.models.swin_transformer import SwinTransformer

    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4],
                            num_classes=10)
    graph = annotated_graph(model, 32)
    matmuls = [n for n in graph.graph.nodes if str(n.target) == "aten.matmul.default"]
    assert len(matmuls) == 4 and all(n.meta.get("quantization_annotation") for n in matmuls)
    softmax = [n for n in graph.graph.nodes if str(n.target) == "aten.softmax.int"]
    assert all(n.meta["quantization_annotation"].output_qspec.scale == 1 / 256 for n in softmax)
    result = edgeship.run({
        "name": "swin", "model": {"input": {"shape": [1, 3, 32, 32], "num_classes": 10}},
        "data": {"calibration": {"source": "digits", "samples": 32}, "validation": {"source": "digits", "samples": 32}},
        "stages": [{"type": "quantize"}], "export": {"formats": ["onnx", "tflite"]},
        "validate": {"cross_check": False}, "latency": {"enabled": False}}, model=model, out=tmp_path / "run")
    rows = result.results
    # TFLite refuses an int8 softmax whose output is not at 1/256 (the model would not load at all); before the
    # attention matmuls were annotated they ran in float on every runtime.
    assert rows["litert"]["precision"] == rows["onnxruntime"]["precision"] == "int8"


@pytest.mark.slow
def test_densenet121_converts_to_tflite_at_w8a8(tmp_path):
    # Before same-scale ops shared their input's parameters: "tfl.average_pool_2d op quantization parameters violate
    # the same scale constraint", and no TFLite file.
    result = edgeship.run({
        "name": "densenet", "model": {"source": "torchvision:densenet121",
                                      "input": {"shape": [1, 3, 32, 32], "num_classes": 10}},
        "data": {"calibration": {"source": "digits", "samples": 32}, "validation": {"source": "digits", "samples": 32}},
        "stages": [{"type": "quantize"}], "export": {"formats": ["tflite"]},
        "validate": {"cross_check": False}, "latency": {"enabled": False}}, out=tmp_path / "run")
    assert result.report["exports"]["tflite"]["status"] == "converted"
    assert result.results["litert"]["precision"] == "int8"
