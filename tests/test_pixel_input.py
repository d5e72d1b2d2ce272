"""Pixel inputs: the normalisation folded into the first convolution, every 8-bit pixel exact in the artifacts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgeship
from edgeship.core.errors import ConfigError
from edgeship.quant.pixels import PixelInput, fold_normalization

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # off the 1/255 grid, like most normalisations
ALL_PIXELS = np.arange(256, dtype=np.float32).reshape(1, 1, 16, 16) / 255  # every 8-bit value once


@pytest.mark.parametrize("padding", [1, 0])
def test_folding_the_normalisation_is_exact_at_the_borders_too(padding):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=padding), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4)).eval()
    x = torch.rand(2, 3, 12, 12)
    model(x)  # materialise the lazy layer
    folded, stem = fold_normalization(model, MEAN, STD, x)
    assert stem == "0.conv"
    assert (folded[0].pad is not None) == (padding > 0)  # a border channel only where taps read padding
    torch.testing.assert_close(folded(x), PixelInput(model, MEAN, STD)(x), atol=1e-5, rtol=1e-5)


def test_a_model_that_does_not_start_with_a_convolution_is_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    with pytest.raises(ConfigError, match="straight into one ordinary convolution"):
        fold_normalization(model, MEAN, STD, torch.rand(1, 3, 8, 8))


def test_uint8_io_needs_pixel_inputs():
    recipe = {"name": "u8", "model": {"source": "edgeship.zoo:digits_cnn",
                                      "input": {"shape": [1, 1, 16, 16], "mean": [0.5], "std": [0.5],
                                                "num_classes": 10}},
              "stages": [{"type": "quantize"}], "export": {"tflite": {"uint8_io": True}}}
    with pytest.raises(ConfigError, match="pixel_input: true"):
        edgeship.load_recipe(recipe)
    recipe["stages"] = [{"type": "quantize", "pixel_input": True}]
    assert edgeship.load_recipe(recipe).export.tflite.uint8_io


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pixels")
    recipe = {"name": "pixels", "model": {"source": "edgeship.zoo:digits_cnn",
                                          "input": {"shape": [1, 1, 16, 16], "mean": [0.5], "std": [0.5],
                                                    "num_classes": 10}},
              "data": {"calibration": {"source": "digits", "samples": 128},
                       "validation": {"source": "digits", "samples": 200}},
              "stages": [{"type": "train", "epochs": 6, "lr": 0.01}, {"type": "quantize", "pixel_input": True}],
              "export": {"formats": ["onnx", "tflite"], "tflite": {"uint8_io": True}},
              "validate": {"cross_check": False}, "latency": {"enabled": False}}
    return edgeship.run(recipe, out=tmp / "run"), tmp / "run"


def test_every_pixel_value_survives_the_input_quantizer_unchanged(pixel_run):
    from ai_edge_litert.interpreter import Interpreter

    result, run_dir = pixel_run
    quant = next(s for s in result.report["stages"] if s["type"] == "quantize")["metrics"]
    assert quant["pixel_input"]["stem"] == "0.conv"
    # The ONNX artifact's input quantizer (the PT2E model's, lowered; its int8 activations are stored as uint8, the
    # zero point shifted by 128): scale 1/255, and every pixel k becomes the integer zero + k, which dequantizes
    # back to k/255.
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(run_dir / "artifacts" / "model.onnx")).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    first = next(n for n in graph.node if n.op_type == "QuantizeLinear")
    scale, zero = init[first.input[1]], init[first.input[2]]
    assert scale == np.float32(1 / 255)
    info = np.iinfo(zero.dtype)
    ints = np.clip(np.round(ALL_PIXELS / scale) + int(zero), info.min, info.max)
    np.testing.assert_array_equal(ints.ravel() - int(zero), np.arange(256))
    np.testing.assert_allclose((ints - int(zero)) * scale, ALL_PIXELS, rtol=0, atol=1e-7)
    # The TFLite artifact takes raw uint8 pixels; the int8 tensor its stem convolution reads holds p - 128 for
    # every pixel p (the border channel beside it is 0 or 1).
    path = run_dir / "artifacts" / "model.tflite"
    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (pytest.approx(1 / 255), 0)
    interp.set_tensor(inp["index"], np.arange(256, dtype=np.uint8).reshape(inp["shape"]))
    interp.invoke()
    grid = [t for t in interp.get_tensor_details()
            if t["dtype"] == np.int8 and t["quantization"][0] == pytest.approx(1 / 255) and t["shape"][-1] == 2]
    assert grid, "no int8 tensor at the pixel grid"
    stem_input = interp.get_tensor(grid[0]["index"])
    np.testing.assert_array_equal(stem_input[0, 1:-1, 1:-1, 0].ravel(), np.arange(256) - 128)  # inside the ring
    assert set(np.unique(stem_input[..., 1])) == {-128, 127}  # the border channel: 0 inside, 1 on the ring


def test_pixel_input_artifacts_are_validated_on_pixels_and_agree(pixel_run):
    result, _ = pixel_run
    for runtime in ("onnxruntime", "litert"):
        row = result.results[runtime]
        assert row["metrics"]["top1_agreement"] >= 0.995 and row["metrics_vs_float"]["top1_agreement"] >= 0.98
    assert result.report["artifacts"]["tflite"]["details"]["input_dtype"] == "uint8"
    assert result.report["artifacts"]["tflite"]["input_spec"]["mean"] == [0.0]  # the artifact takes [0, 1] pixels
