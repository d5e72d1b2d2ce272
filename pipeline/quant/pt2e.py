"""Build edgeship's PT2E quantizer from a ``QuantizeConfig`` and run prepare -> calibrate -> convert.

The quantizer is litert-torch's ``PT2EQuantizer`` (so its patterns are exactly what the TFLite lowering
understands) annotated with the global config; each layer's weight (and input-activation) spec is then
replaced by its resolved per-layer spec, keyed on the node's own module path.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeship.core.graph import node_module
from edgeship.quant.bits import LayerBits
from edgeship.quant.config import QuantizeConfig, cpu_needs_overflow_fix

CONV_LINEAR = ("aten.conv1d.default", "aten.conv2d.default", "aten.linear.default")


def weight_range(bits: int, mode: str, overflow_fix: bool = False) -> tuple[int, int]:
    """Signed symmetric integer range for ``bits``-bit weights (restricted drops -2^(b-1)).

    ``overflow_fix`` stores 8-bit weights in [-63, 63]: x86 u8s8 kernels without VNNI add pairs of u8*s8
    products in int16, which saturates with full-range weights (measured: 0.87 agreement on a digits CNN in
    onnxruntime; 1.0 with the fix).
    """
    if overflow_fix and bits == 8:
        return -63, 63
    q_max = 2 ** (bits - 1) - 1
    return (-q_max if mode == "restricted" else -(q_max + 1)), q_max


def act_range(bits: int, signed: bool) -> tuple[torch.dtype, int, int]:
    """Container dtype and integer range of ``bits``-bit activations (16 bits: symmetric int16)."""
    if bits == 16:
        return torch.int16, -32767, 32767
    if signed:
        return torch.int8, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.uint8, 0, 2**bits - 1


def overflow_fix_enabled(cfg: QuantizeConfig) -> bool:
    """Resolve ``cfg.overflow_fix`` (auto: this CPU's flags)."""
    return cfg.overflow_fix == "enable" or (cfg.overflow_fix == "auto" and cpu_needs_overflow_fix())


def _specs(cfg: QuantizeConfig, w_bits: int, a_bits: int, logits: bool = False) -> tuple[Any, Any]:
    """(activation, weight) specs at these bits; ``logits``: the classifier's output quantizer.

    The logits quantizer never clips the top logits (PTQ: min-max, or the ``decisive`` range from the lowest
    runner-up up; QAT: ``init="range"``): two top logits clipped to one level tie (an MSE-calibrated ViT on
    digits: 1.1% of its PT2E logits tied). In QAT every other step starts at the first batch's least-error clip
    (``init="mse"``); LSQ's own 2·mean|v|/√Q_P is ~0.18·mean|z| at 8 bits: close logits share a level (measured:
    5% tied logits on a digits CNN).
    """
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    from edgeship.calibration.estimators import ESTIMATORS, LOGITS_OBSERVERS
    from edgeship.quant.dorefa import (
        MAX_DOREFA_WEIGHT_BITS,
        DoReFaActFakeQuantize,
        DoReFaWeightFakeQuantize,
        dorefa_levels,
    )
    from edgeship.quant.lsq import LSQFakeQuantize

    act_obs_factory, weight_obs = ESTIMATORS[cfg.calibration.estimator]
    act_ctor: Any = LSQFakeQuantize if cfg.mode == "qat" else act_obs_factory(cfg.calibration.percentile)
    w_ctor: Any = LSQFakeQuantize if cfg.mode == "qat" else weight_obs
    w_min, w_max = weight_range(w_bits, cfg.weight_range, overflow_fix_enabled(cfg))
    eps = 2**-12
    act_args: dict[str, Any] = {"eps": eps}
    w_args: dict[str, Any] = {"eps": eps}
    if cfg.mode == "qat":
        act_args["init"] = w_args["init"] = "mse"
    if cfg.mode == "qat" and cfg.qat.quantizer == "dorefa":
        act_ctor, act_args["fixed_range"] = DoReFaActFakeQuantize, cfg.qat.dorefa_act_range
        if w_bits <= MAX_DOREFA_WEIGHT_BITS:  # 8-bit layers (first conv, classifier) keep LSQ
            w_ctor, w_min, w_max = DoReFaWeightFakeQuantize, -dorefa_levels(w_bits), dorefa_levels(w_bits)
    if logits:  # never clipped at the top, whatever the estimator: clipped top logits tie
        act_ctor, act_args = ((LSQFakeQuantize, {"eps": eps, "init": "range"}) if cfg.mode == "qat"
                              else (LOGITS_OBSERVERS[cfg.calibration.logits_range], {"eps": eps}))
    dtype, a_min, a_max = act_range(a_bits, cfg.act_signed)
    # TFLite's 16x8 kernels take symmetric int16 activations only (zero point 0).
    act_scheme = torch.per_tensor_symmetric if a_bits == 16 else torch.per_tensor_affine
    act = QuantizationSpec(dtype=dtype, quant_min=a_min, quant_max=a_max, qscheme=act_scheme,
                           is_dynamic=False, observer_or_fake_quant_ctr=act_ctor.with_args(**act_args))
    weight = QuantizationSpec(
        dtype=torch.int8, quant_min=w_min, quant_max=w_max, ch_axis=0, is_dynamic=False,
        qscheme=torch.per_channel_symmetric if cfg.per_channel else torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=w_ctor.with_args(**w_args))
    return act, weight


def pixel_spec(signed: bool) -> Any:
    """The input quantizer of a pixel-input model: scale 1/255, so pixel p is the integer p (uint8) or p - 128."""
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec

    dtype, qmin, qmax, zero = (torch.int8, -128, 127, -128) if signed else (torch.uint8, 0, 255, 0)
    return FixedQParamsQuantizationSpec(dtype=dtype, quant_min=qmin, quant_max=qmax, scale=1 / 255, zero_point=zero,
                                        qscheme=torch.per_tensor_affine)


def build_quantizer(cfg: QuantizeConfig, table: Sequence[LayerBits], float_layers: frozenset[str] = frozenset(),
                    stem: str | None = None) -> Any:
    """A litert-torch ``PT2EQuantizer`` with the global spec and per-layer bit widths from ``table``.

    ``float_layers``: conv/linear modules left unquantized (accuracy control's fallback). ``stem``: the
    convolution of a pixel-input model (``cfg.pixel_input``) that reads the pixels, at their own 1/255 grid.
    """
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    act, weight = _specs(cfg, cfg.weight_bits, cfg.act_bits)
    base = get_symmetric_quantization_config(is_per_channel=cfg.per_channel, is_qat=cfg.mode == "qat")
    global_cfg = dataclasses.replace(base, input_activation=act, output_activation=act, weight=weight)
    per_layer = {lb.name: _specs(cfg, lb.weight_bits, lb.act_bits) for lb in table
                 if (lb.weight_bits, lb.act_bits) != (cfg.weight_bits, cfg.act_bits)}
    last = table[-1].name if table else None
    first = stem if cfg.pixel_input else None
    logits = _specs(cfg, table[-1].weight_bits, table[-1].act_bits, logits=True)[0] if table else None

    class EdgeshipQuantizer(PT2EQuantizer):
        """PT2EQuantizer + exact per-layer weight/input specs (matched on the node's module path).

        For the last layer the activation spec applies to its output instead of its input, so a classifier
        kept at 8 bits gives 8-bit logits from the body's narrower features.
        """

        # BatchNorm is folded before QAT, so conv-bn patterns never occur; litert-torch's annotator for them
        # also fails with torch 2.14 (it hands torch.export a function).
        STATIC_QAT_ONLY_OPS: list[str] = []  # noqa: RUF012 - overrides the parent's class attribute

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            annotate_missed_relu_add(model, act)
            annotate_softmax_probabilities(model, act)
            annotate_same_scale(model, act)
            annotate_activation_matmuls(model, act)
            annotate_same_scale(model, act)  # the reshapes and transposes after a matmul quantized just now
            for node in model.graph.nodes:
                if node.op != "call_function" or str(node.target) not in CONV_LINEAR:
                    continue
                ann = node.meta.get("quantization_annotation")
                if ann is None:
                    continue
                name = node_module(node)
                if name in float_layers:
                    ann.input_qspec_map, ann.output_qspec = {}, None  # runs in float; its neighbours stay int8
                    continue
                if name == first and node.args[0] in ann.input_qspec_map:
                    ann.input_qspec_map[node.args[0]] = pixel_spec(cfg.act_signed)
                if name == last and ann.output_qspec is not None:
                    # The logits take the classifier's own width: 16 levels would tie and decide labels by index.
                    ann.output_qspec = logits
                specs = per_layer.get(name or "")
                if specs is None:
                    continue
                layer_act, layer_weight = specs
                if node.args[1] in ann.input_qspec_map:
                    ann.input_qspec_map[node.args[1]] = layer_weight
                # The classifier's input stays at the body's width (re-quantizing 4-bit values to 8 bits adds
                # nothing, can only clip, and TFLite drops such requantizes: measured 0.90 agreement).
                if (name not in (last, first) and node.args[0] in ann.input_qspec_map
                        and layer_act.quant_max != act.quant_max):
                    ann.input_qspec_map[node.args[0]] = layer_act
            return model

    return EdgeshipQuantizer().set_global(global_cfg)


RELU = ("aten.relu.default", "aten.relu_.default")
ADD = ("aten.add.Tensor", "aten.add_.Tensor")


def annotate_missed_relu_add(model: torch.fx.GraphModule, act: Any) -> None:
    """Annotate ReLU/add nodes litert-torch's partition-based annotators skipped.

    torchvision's BasicBlock calls one ``nn.ReLU`` module twice; its source partition then has two outputs and
    litert-torch skips every conv+relu and add+relu there, leaving the residual adds in float (measured on
    resnet18: 8 float ADDs and 22 QUANTIZE/DEQUANTIZE round trips in the TFLite model, slower than fp32).
    The same fused patterns litert-torch uses are applied here: conv -> relu quantizes only the relu output;
    add -> relu quantizes the add inputs and the relu output.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    def annotated(n: Any) -> bool:
        ann = n.meta.get("quantization_annotation")
        return ann is not None and ann._annotated

    for node in model.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        if target in RELU and not annotated(node):
            src = node.args[0]
            src_ann = src.meta.get("quantization_annotation") if isinstance(src, torch.fx.Node) else None
            if (str(getattr(src, "target", "")) in CONV_LINEAR and src_ann is not None and len(src.users) == 1):
                src_ann.output_qspec = None  # fused: conv output stays internal
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={}, output_qspec=act, _annotated=True)
            elif str(getattr(src, "target", "")) in ADD and not annotated(src) and len(src.users) == 1:
                src.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: act for a in src.args[:2] if _float_tensor(a)}, _annotated=True)
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={}, output_qspec=act, _annotated=True)
            elif _float_tensor(src):
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={src: act}, output_qspec=act, _annotated=True)
    for node in model.graph.nodes:
        if node.op == "call_function" and str(node.target) in ADD and not annotated(node):
            inputs = [a for a in node.args[:2] if _float_tensor(a)]
            if len(inputs) == 2:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=dict.fromkeys(inputs, act), output_qspec=act, _annotated=True)


# Ops whose output TFLite requires on its input's scale and zero point (a same-scale constraint), and that commute
# with quantization (moving or picking values, or averaging them): they share their input's quantization parameters.
SAME_SCALE = {"aten.avg_pool2d.default", "aten.max_pool2d.default", "aten.adaptive_avg_pool2d.default",
              "aten.permute.default", "aten.transpose.int", "aten.view.default", "aten.reshape.default",
              "aten.flatten.using_ints", "aten.squeeze.dim", "aten.unsqueeze.default", "aten.pad.default",
              "aten.constant_pad_nd.default", "aten.contiguous.default", "aten.clone.default",
              "aten.slice.Tensor", "aten.pixel_shuffle.default", "aten.roll.default", "aten.dropout.default"}
CONCAT = ("aten.cat.default", "aten.concat.default")
MATMUL = ("aten.matmul.default", "aten.bmm.default")
SOFTMAX = ("aten.softmax.int", "aten._softmax.default")


def _quantized_output(node: Any) -> bool:
    """True when ``node``'s output is annotated to be quantized (its own spec or one shared with another)."""
    ann = node.meta.get("quantization_annotation") if isinstance(node, torch.fx.Node) else None
    return ann is not None and ann.output_qspec is not None


def _full_range(node: Any, shared: set[Any]) -> bool:
    """True when ``node``'s output is quantized with a full 8-bit (or wider) range, or shares such a range."""
    if node in shared:
        return True
    ann = node.meta.get("quantization_annotation") if isinstance(node, torch.fx.Node) else None
    spec = ann.output_qspec if ann is not None else None
    qmin, qmax = getattr(spec, "quant_min", None), getattr(spec, "quant_max", None)
    return qmin is not None and qmax is not None and qmax - qmin >= 255


def annotate_same_scale(model: torch.fx.GraphModule, act: Any) -> int:
    """Same-scale ops after a quantized tensor share its quantization parameters; return how many were annotated.

    litert-torch's quantizer leaves pooling, reshapes, transposes and concatenation unannotated. After a quantized
    producer the converter then fuses dequantize -> op -> quantize into an integer op whose input and output scales
    differ, which TFLite refuses for these ops (measured: densenet121's ``tfl.average_pool_2d`` and maxvit_t's
    ``tfl.transpose``, "quantization parameters violate the same scale constraint": no TFLite file at all). A
    concatenation quantizes its first input and requantizes the others to the same parameters. Only 8-bit (or
    wider) tensors propagate: sharing a 4-bit activation's range moved the W2A4 digits Arch-Net student's OpenVINO
    artifact to 0.975 agreement with its PT2E model (seed 1; 1.0 without), and TFLite's constraint is on int8 ops.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    annotated, wide = 0, set()
    for node in model.graph.nodes:  # topological: a chain of same-scale ops propagates
        if node.op != "call_function" or node.meta.get("quantization_annotation") is not None:
            continue
        target = str(node.target)
        if target in SAME_SCALE and node.args and _full_range(node.args[0], wide):
            shared = SharedQuantizationSpec(node.args[0])
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: shared}, output_qspec=shared, _annotated=True)
            wide.add(node)
            annotated += 1
        elif target in CONCAT and node.args and isinstance(node.args[0], list | tuple):
            inputs = [a for a in node.args[0] if isinstance(a, torch.fx.Node)]
            if len(inputs) < 2 or not all(_full_range(a, wide) for a in inputs):
                continue
            shared = SharedQuantizationSpec((inputs[0], node))
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={inputs[0]: act, **dict.fromkeys(inputs[1:], shared)}, output_qspec=shared,
                _annotated=True)
            wide.add(node)
            annotated += 1
    return annotated


def _float_tensor(a: Any) -> bool:
    """True when ``a`` is a graph node holding a floating-point tensor."""
    return isinstance(a, torch.fx.Node) and isinstance(a.meta.get("val"), torch.Tensor) and (
        a.meta["val"].is_floating_point())


def _activation(a: Any) -> bool:
    """A float tensor computed by the graph (not a weight or constant read with get_attr)."""
    return _float_tensor(a) and a.op != "get_attr"


def _feeds_matmul(node: Any) -> bool:
    """True when ``node`` reaches a matmul directly or through same-scale ops (dropout, reshapes)."""
    return any(str(u.target) in MATMUL or (str(u.target) in SAME_SCALE and _feeds_matmul(u)) for u in node.users)


def annotate_softmax_probabilities(model: torch.fx.GraphModule, act: Any) -> int:
    """A softmax feeding a matmul (attention probabilities) is quantized at TFLite's fixed 1/256, zero point -128.

    TFLite's int8 softmax writes exactly those output parameters and refuses a model with any other ("output->params
    .scale not near 1.f / 256"); the probabilities in [0, 1) lose nothing at that step.
    """
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec, QuantizationAnnotation

    probabilities = FixedQParamsQuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, scale=1 / 256,
                                                 zero_point=-128, qscheme=torch.per_tensor_affine)
    annotated = 0
    for node in model.graph.nodes:
        if (node.op == "call_function" and str(node.target) in SOFTMAX and _activation(node.args[0])
                and node.meta.get("quantization_annotation") is None and _feeds_matmul(node)):
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: act}, output_qspec=probabilities, _annotated=True)
            annotated += 1
    return annotated


def annotate_activation_matmuls(model: torch.fx.GraphModule, act: Any) -> int:
    """Quantize both operands (and the output) of matmuls between two activations; return how many.

    Attention's q·kᵀ and attn·v are ``aten.matmul`` of two activations, which litert-torch's quantizer leaves in
    float (measured: swin_t ran 53 of 77 matmuls in int8 and agreed with its PT2E model on 0.81-0.94 of samples).
    All three runtimes have int8 kernels for a matmul of two int8 tensors (TFLite BATCH_MATMUL, onnxruntime
    QLinearMatMul, OpenVINO's low-precision MatMul). An operand already quantized (softmax probabilities, a
    reshaped projection) keeps its parameters.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    annotated = 0
    for node in model.graph.nodes:
        if (node.op == "call_function" and str(node.target) in MATMUL and
                node.meta.get("quantization_annotation") is None and all(_activation(a) for a in node.args[:2])):
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={a: SharedQuantizationSpec(a) if _quantized_output(a) else act
                                 for a in node.args[:2]}, output_qspec=act, _annotated=True)
            annotated += 1
    return annotated


def dynamic_batch_export(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``torch.export`` with a dynamic batch dimension (calibration and QAT run real batches)."""
    from edgeship.core.graph import dynamic_batch_shapes

    model.eval()
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_batch_shapes(model))
    return program.module()


def calibrate(model: torch.fx.GraphModule, x: np.ndarray, batch_size: int = 32) -> None:
    """Run calibration batches through a prepared model (observers record ranges)."""
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(torch.from_numpy(x[i:i + batch_size]))


def release_graph_caches() -> None:
    """Drop the caches of every graph torchao and torch.ao prepared or converted.

    ``torchao.utils._assert_and_get_unique_device`` and ``torch.ao.quantization.fx.utils.assert_and_get_unique_device``
    are unbounded ``functools.cache``s keyed by the module they are given, so each ``prepare_pt2e`` and
    ``convert_pt2e`` keeps its graph (and weights) alive: accuracy control's quantize-one-layer-out grew to 14 GB on
    inception_v3 (60 MB per trial on resnet18; flat with this).
    """
    import torch.ao.quantization.fx.utils
    import torchao.utils

    for cached in (getattr(torchao.utils, "_assert_and_get_unique_device", None),
                   getattr(torch.ao.quantization.fx.utils, "assert_and_get_unique_device", None)):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def finish(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``convert_pt2e`` keeping weights as float + Q/DQ (exporters fold them), in eval mode."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgeship.quant.dorefa import bake_dorefa_weights

    bake_dorefa_weights(model)  # convert quantizes the stored weights: they must hold the DoReFa levels
    converted = convert_pt2e(model, fold_quantize=False)
    match_runtimes(converted)
    allow_exported_model_train_eval(converted)
    converted.eval()  # the patched eval() returns None, not the module
    return converted


def match_runtimes(model: torch.fx.GraphModule) -> None:
    """Make a converted PT2E graph compute what the integer runtimes will.

    Sub-8-bit activations saturate at their own range and biases sit on the int32 grid. Both passes are
    idempotent, so a reloaded ``model.pt2`` (perhaps saved before a pass existed) goes through them again.
    """
    saturate_narrow_activations(model)
    round_biases_to_accumulator_grid(model)


def round_biases_to_accumulator_grid(model: torch.fx.GraphModule) -> int:
    """Put every quantized conv/linear bias on its int32 grid s_in·s_w, in place; return how many.

    Integer runtimes store the bias as round(b / (s_in·s_w)) in int32 (onnxruntime quantizes the float bias of a
    QDQ graph itself; TFLite does the same). PT2E keeps it in float, so with coarse scales the reference drifts
    from the runtimes: on the W2A4 digits Arch-Net student, onnxruntime and LiteRT were at 14 dB SQNR against the
    PT2E model (1% of labels flipped), and onnxruntime with its QDQ transforms off, which keeps the float bias,
    at 50 dB. With the reference on the grid, onnxruntime's outputs were bit-identical to it. Idempotent.
    """
    quant = torch.ops.quantized_decomposed
    rounded = 0
    for node in model.graph.nodes:
        if str(node.target) not in CONV_LINEAR or len(node.args) < 3:
            continue
        x, w, b = node.args[:3]
        if not isinstance(b, torch.fx.Node) or b.op != "get_attr" or not isinstance(x, torch.fx.Node):
            continue
        if x.target != quant.dequantize_per_tensor.default or not isinstance(x.args[1], float):
            continue
        if getattr(w, "target", None) == quant.dequantize_per_channel.default:
            s_w = operator.attrgetter(w.args[1].target)(model)
        elif getattr(w, "target", None) == quant.dequantize_per_tensor.default:
            s_w = torch.tensor(w.args[1])
        else:
            continue
        bias = operator.attrgetter(b.target)(model)
        step = x.args[1] * s_w.double()
        with torch.no_grad():
            bias.copy_((torch.round(bias.double() / step) * step).to(bias.dtype))
        rounded += 1
    return rounded


def container_range(dtype: torch.dtype) -> tuple[int, int] | None:
    """The integer range of an 8-bit activation container (int8 or uint8); None for any other dtype."""
    if dtype not in (torch.int8, torch.uint8):
        return None
    info = torch.iinfo(dtype)
    return info.min, info.max


def saturate_narrow_activations(model: torch.fx.GraphModule) -> int:
    """Make every sub-8-bit activation saturate at its own range in the exported artifacts; return how many.

    A 4-bit activation is stored in an int8 container: ONNX QuantizeLinear and TFLite tensors carry only the
    scale and zero point, so runtimes saturate at the container's [-128, 127] and values the PT2E model clips
    at 15 levels pass through (measured on digits W2A4: onnxruntime 0.964 agreement with the PT2E model, 1.0
    once clipped). After each such dequantize we add a clamp to the range's real bounds and re-quantize with the
    same parameters; the PT2E outputs are unchanged (the values are already clamped there) and every format then
    holds exactly the narrow integers: a Clip in ONNX (onnxruntime keeps a Clip narrower than its quantizer), an
    int8 MINIMUM/MAXIMUM in TFLite, a narrow FakeQuantize in OpenVINO (``narrow_fake_quantizes``).
    Idempotent (a re-quantize fed by a clamp, or a dequantize already followed by one, is skipped), so it can
    run again on a reloaded ``model.pt2``.
    """
    graph = model.graph
    quant = torch.ops.quantized_decomposed
    added = 0
    for dq in list(graph.nodes):
        if dq.target != quant.dequantize_per_tensor.default or len(dq.args) < 6:
            continue
        q_in, scale, zero, qmin, qmax, dtype = dq.args[:6]
        source = q_in.args[0] if isinstance(q_in, torch.fx.Node) and q_in.args else None
        if isinstance(source, torch.fx.Node) and (
                source.op == "get_attr" or source.target == torch.ops.aten.clamp.default):
            continue  # weights (the exporters fold them to clipped integers), or a re-quantize this pass added
        container = container_range(dtype)
        if not isinstance(scale, float | int) or not isinstance(zero, float | int) or container is None:
            continue
        if (qmin, qmax) == container or any(u.target == torch.ops.aten.clamp.default for u in dq.users):
            continue
        users = list(dq.users)
        with graph.inserting_after(dq):
            clamp = graph.call_function(torch.ops.aten.clamp.default,
                                        (dq, (qmin - zero) * scale, (qmax - zero) * scale))
        with graph.inserting_after(clamp):
            q = graph.call_function(quant.quantize_per_tensor.default, (clamp, *dq.args[1:6]))
        with graph.inserting_after(q):
            dq2 = graph.call_function(quant.dequantize_per_tensor.default, (q, *dq.args[1:6]))
        for u in users:
            u.replace_input_with(dq, dq2)
        added += 1
    if added:
        graph.lint()
        model.recompile()
    return added

