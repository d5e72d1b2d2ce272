"""Quantizer math (LSQ round/clamp/step gradient, init), bit resolution and range estimators."""

from __future__ import annotations

import copy
import math
import operator

import pytest
import torch
from torch import nn

from edgeship.calibration.estimators import (
    DecisiveLogitsObserver,
    MSEObserver,
    PerChannelMSEObserver,
    percentile_observer,
)
from edgeship.core.errors import ConfigError
from edgeship.quant.bits import resolve_bits
from edgeship.quant.config import QuantizeConfig
from edgeship.quant.lsq import LSQFakeQuantize, grad_scale, lsq_quantize, round_ste
from edgeship.quant.pt2e import act_range, weight_range
from edgeship.zoo import digits_cnn


def test_lsq_forward_rounds_and_clamps():
    v = torch.tensor([-3.0, -0.26, 0.24, 0.76, 5.0])
    out = lsq_quantize(v, torch.tensor(0.5), torch.tensor(0.0), -2, 1, g=1.0)
    # v/s = -6, -0.52, 0.48, 1.52, 10 -> clamp [-2, 1] -> round -> -2, -1, 0, 1, 1 -> times 0.5
    assert out.tolist() == [-1.0, -0.5, 0.0, 0.5, 0.5]


def test_lsq_step_gradient_matches_the_paper():
    v = torch.tensor([-3.0, -0.26, 0.24, 0.76, 5.0])
    s = torch.tensor(0.5, requires_grad=True)
    lsq_quantize(v, s, torch.tensor(0.0), -2, 1, g=1.0).sum().backward()
    # inside the range: -v/s + round(v/s); below: Q_N side = -2; above: Q_P = 1
    expected = [-2.0, 1.04 + (-1.0), -0.48 + 0.0, -1.52 + 2.0, 1.0]
    per_element = expected  # gradients add up over the elements
    assert s.grad.item() == pytest.approx(sum(per_element), abs=1e-5)


def test_grad_scale_and_ste():
    x = torch.tensor(2.0, requires_grad=True)
    grad_scale(x, 0.25).backward()
    assert x.grad.item() == 0.25
    y = torch.tensor([0.4, 1.6], requires_grad=True)
    r = round_ste(y)
    r.sum().backward()
    assert r.tolist() == [0.0, 2.0] and y.grad.tolist() == [1.0, 1.0]


def test_lsq_init_and_gradient_scale():
    fq = LSQFakeQuantize(dtype=torch.int8, quant_min=-7, quant_max=7, qscheme=torch.per_channel_symmetric, ch_axis=0)
    w = torch.randn(4, 3, 3, 3)
    fq(w)
    expected = 2 * w.abs().mean(dim=(1, 2, 3)) / math.sqrt(7)
    assert torch.allclose(fq.scale.detach(), expected)
    scale, zero = fq.calculate_qparams()
    assert scale.shape == (4,) and torch.all(zero == 0)
    act = LSQFakeQuantize(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine)
    act(torch.rand(8, 16))  # non-negative: the zero point sits at q_min, Q_P = 255
    assert act.zero_point.item() == -128 and act.q_p == 255


def test_weight_and_activation_ranges():
    assert weight_range(4, "restricted") == (-7, 7)
    assert weight_range(4, "full") == (-8, 7)
    assert weight_range(2, "restricted") == (-1, 1)
    assert weight_range(8, "restricted", overflow_fix=True) == (-63, 63)
    assert weight_range(4, "restricted", overflow_fix=True) == (-7, 7)
    assert act_range(4, True) == (torch.int8, -8, 7) and act_range(8, False) == (torch.uint8, 0, 255)
    assert act_range(16, True) == (torch.int16, -32767, 32767)


def test_default_bits_keep_first_conv_and_classifier_at_8():
    table, warnings = resolve_bits(digits_cnn(), QuantizeConfig(type="quantize", weight_bits=4))
    assert [(b.name, b.weight_bits, b.reason) for b in table] == [
        ("0", 8, "first conv"), ("3", 4, "global"), ("6", 4, "global"), ("11", 8, "classifier")]
    assert warnings == []


def test_overrides_first_match_wins_and_unmatched_warns():
    cfg = QuantizeConfig(type="quantize", weight_bits=4, overrides=[
        {"match": "^6$", "weight_bits": 3}, {"match": "^[36]$", "weight_bits": 2}, {"match": "^fc$", "weight_bits": 5}])
    table, warnings = resolve_bits(digits_cnn(), cfg)
    bits = {b.name: b.weight_bits for b in table}
    assert bits == {"0": 8, "3": 2, "6": 3, "11": 8}
    assert len(warnings) == 1 and "'^fc$' matches no layer" in warnings[0] and "0, 3, 6, 11" in warnings[0]


def test_override_can_lower_the_first_conv():
    cfg = QuantizeConfig(type="quantize", weight_bits=4, overrides=[{"match": "^0$", "weight_bits": 4}])
    assert resolve_bits(digits_cnn(), cfg)[0][0].weight_bits == 4


@pytest.mark.parametrize("bad", [{"weight_bits": 1}, {"weight_bits": 9}, {"act_bits": 3}, {"act_bits": 12},
                                 {"act_bits": 32},
                                 {"overrides": [{"match": "(", "weight_bits": 4}]}, {"mode": "gptq"}])
def test_bad_quantize_config_is_a_config_error(bad, tmp_path):
    from edgeship.recipe import parse_recipe
    from tests.conftest import tiny_recipe

    with pytest.raises(ConfigError, match="stages.1"):
        parse_recipe(tiny_recipe(tmp_path, stages=[{"type": "train"}, {"type": "quantize", **bad}]))


def test_percentile_and_mse_estimators_clip_outliers():
    x = torch.randn(20000)
    x[0] = 50.0
    p = percentile_observer(99.9)(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine)
    p(x)
    scale_p = p.calculate_qparams()[0].item()
    m = MSEObserver(dtype=torch.int8, quant_min=-8, quant_max=7, qscheme=torch.per_tensor_affine)
    m(x)
    scale_m = m.calculate_qparams()[0].item()
    minmax = (50.0 - x.min().item()) / 255
    assert scale_p < minmax / 5  # the outlier no longer sets the range
    assert scale_m < (50.0 - x.min().item()) / 15 / 2


def test_per_channel_mse_never_worse_than_minmax():
    w = torch.randn(8, 4, 3, 3)
    w[0, 0, 0, 0] = 9.0
    obs = PerChannelMSEObserver(dtype=torch.int8, quant_min=-7, quant_max=7, qscheme=torch.per_channel_symmetric)
    obs(w)
    scale = obs.calculate_qparams()[0]

    def err(s: torch.Tensor) -> torch.Tensor:
        s = s.view(-1, 1, 1, 1)
        return ((torch.clamp(torch.round(w / s), -7, 7) * s - w) ** 2).mean(dim=(1, 2, 3))

    minmax = w.abs().amax(dim=(1, 2, 3)) / 7
    assert torch.all(err(scale) <= err(minmax) + 1e-7) and err(scale)[0] < err(minmax)[0]


def _qat_prepared(weight_bits: int, quantizer: str) -> tuple[torch.fx.GraphModule, torch.Tensor]:
    """digits_cnn as a prepared QAT graph (BN folded) after its first, initialising batch."""
    import numpy as np
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    from edgeship.quant.pt2e import build_quantizer, dynamic_batch_export

    model = digits_cnn().eval()
    cfg = QuantizeConfig(type="quantize", mode="qat", weight_bits=weight_bits, qat={"quantizer": quantizer})
    graph = dynamic_batch_export(model, torch.rand(2, 1, 16, 16))
    _fuse_conv_bn_(graph)
    prepared = prepare_qat_pt2e(graph, build_quantizer(cfg, resolve_bits(model, cfg)[0]))
    allow_exported_model_train_eval(prepared)
    x = torch.from_numpy(np.random.default_rng(0).random((16, 1, 16, 16), dtype=np.float32))
    prepared(x)
    return prepared, x


def test_lsq_trains_inside_a_prepared_graph():
    """One QAT step changes both the weights and the LSQ steps (they are trainable parameters)."""
    prepared, x = _qat_prepared(3, "lsq")
    steps = {n: p.detach().clone() for n, p in prepared.named_parameters() if n.endswith("scale")}
    assert steps
    opt = torch.optim.SGD(prepared.parameters(), lr=0.1)
    nn.functional.cross_entropy(prepared(x), torch.zeros(16, dtype=torch.long)).backward()
    opt.step()
    assert any(not torch.equal(p, steps[n]) for n, p in prepared.named_parameters() if n in steps)


def test_function_matching_augmentation_is_seeded_and_shape_preserving():
    from edgeship.distill.losses import augment_batch, kd_loss

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    a = augment_batch(x, "shift+mixup", torch.Generator().manual_seed(3))
    b = augment_batch(x, "shift+mixup", torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, torch.randn(4, 10), 1.0).item() > 0


def test_qat_leaves_the_float_model_untouched(tmp_path):
    """The float model is the teacher and the second reference: QAT must train a copy."""
    from edgeship.calibration.splits import make_splits
    from edgeship.core.artifact import InputSpec
    from edgeship.stage import ModelState, StageContext
    from edgeship.stages.quantize import QuantizeStage

    model = digits_cnn().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    splits = make_splits("digits", "digits", 32, 32, 0, (1, 16, 16), [0.5], [0.5])
    splits.train.x, splits.train.y = splits.train.x[:64], splits.train.y[:64]
    stage = QuantizeStage(QuantizeConfig(type="quantize", mode="qat", weight_bits=4, qat={"epochs": 1}))
    spec = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
    result = stage.run(ModelState(model=model, spec=spec), StageContext(tmp_path, splits, 0, lambda m: None))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in result.state.float_model.state_dict().items())


def test_dorefa_weights_levels_and_fixed_activation_range():
    """2^b symmetric levels with no zero, straight-through gradients; post-ReLU activations on a fixed [0, 10]."""
    from edgeship.quant.dorefa import DoReFaActFakeQuantize, DoReFaWeightFakeQuantize

    fq = DoReFaWeightFakeQuantize(quant_min=-3, quant_max=3)
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    out = fq(w)
    step, zero = fq.calculate_qparams()
    assert set((out / step).round().unique().tolist()) == {-3.0, -1.0, 1.0, 3.0} and int(zero) == 0
    assert torch.allclose(out / step, (out / step).round(), atol=1e-4)
    out.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    # a folded BatchNorm scales each output channel: the levels scale with it (tanh(w)'s do not)
    per_channel = DoReFaWeightFakeQuantize(quant_min=-3, quant_max=3, qscheme=torch.per_channel_symmetric)
    gains = torch.tensor([0.01, 1.0, 10.0, 100.0, 1.0, 1.0, 1.0, 1.0]).reshape(8, 1, 1, 1)
    base = w.detach()
    assert torch.allclose(per_channel(base * gains), per_channel(base) * gains, rtol=1e-5)
    # folded, no BatchNorm restores a kernel's magnitude: ŵ is the least-squares fit of its levels to w, not the
    # paper's k·s/(2n), which shrinks every channel (here to ~0.65x) and starved a W2A4 student's logits
    q = per_channel(base)
    assert torch.allclose((base * q).sum(dim=(1, 2, 3)) / (q * q).sum(dim=(1, 2, 3)), torch.ones(8), atol=1e-4)
    with pytest.raises(ValueError, match="2\\^b-1"):
        DoReFaWeightFakeQuantize(quant_min=-4, quant_max=4)

    act = DoReFaActFakeQuantize(quant_min=-8, quant_max=7, fixed_range=10.0)
    y = act(torch.rand(64) * 12)
    assert float(act.calculate_qparams()[0]) == pytest.approx(10 / 15) and y.max() == pytest.approx(10.0)
    signed = DoReFaActFakeQuantize(quant_min=-8, quant_max=7)
    signed(torch.randn(64))
    assert not bool(signed.fixed) and int(signed.calculate_qparams()[1]) == 0  # a learned LSQ step instead


def test_dorefa_weights_must_be_baked_before_convert():
    """convert_pt2e quantizes the stored weight: baked, it holds exactly the trained levels (and the PT2E model
    computes what QAT trained); unbaked, the raw weights round onto other integers, zero included."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgeship.quant.dorefa import bake_dorefa_weights
    from edgeship.quant.pt2e import finish

    def weight_integers(gm: torch.fx.GraphModule) -> set[float]:
        """The integers of every 2-bit (DoReFa range +-3) per-channel weight quantize in ``gm``."""
        quantize = torch.ops.quantized_decomposed.quantize_per_channel.default
        out: set[float] = set()
        for n in gm.graph.nodes:
            if n.target == quantize and n.args[4] == -3:
                args = [operator.attrgetter(a.target)(gm) if isinstance(a, torch.fx.Node) else a for a in n.args]
                out |= set(quantize(*args).unique().tolist())
        return out

    prepared, x = _qat_prepared(2, "dorefa")
    with torch.no_grad():
        trained = prepared(x)
    unbaked = convert_pt2e(copy.deepcopy(prepared), fold_quantize=False)
    assert 0 in weight_integers(unbaked)
    converted = finish(prepared)
    assert weight_integers(converted) == {-3, -1, 1, 3}
    with torch.no_grad():
        # equal up to the biases' int32 rounding (round_biases_to_accumulator_grid): about one logit step
        assert torch.allclose(converted(x), trained, atol=5e-3)
    assert bake_dorefa_weights(prepared) == 0  # idempotent: already baked


def test_logits_keep_their_whole_range_whatever_the_estimator():
    """A clipping estimator calibrates the body; the logits quantizer still covers every calibration logit
    (two top logits clipped to one level tie)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgeship.quant.pt2e import build_quantizer, calibrate, dynamic_batch_export, finish

    torch.manual_seed(0)
    model = digits_cnn().eval()
    x = torch.randn(64, 1, 16, 16)
    cfg = QuantizeConfig(type="quantize", calibration={"estimator": "percentile", "percentile": 90})
    prepared = prepare_pt2e(dynamic_batch_export(model, x[:2]), build_quantizer(cfg, resolve_bits(model, cfg)[0]))
    calibrate(prepared, x.numpy())
    converted = finish(prepared)
    output = next(n for n in converted.graph.nodes if n.op == "output")
    scale, zero, q_min, q_max = output.args[0][0].args[0].args[1:5]
    with torch.no_grad():
        logits = model(x)
    slack = 2 * scale  # the observer saw the logits of the quantized body, not of the float model
    assert (q_min - zero) * scale <= float(logits.min()) + slack
    assert float(logits.max()) <= (q_max - zero) * scale + slack


def test_decisive_logits_range_keeps_every_label_with_a_finer_step():
    """Logits below every runner-up clip; no label changes and the step shrinks (a min-max range spends its
    levels on logits that never decide a label)."""
    from torchao.quantization.pt2e.observer import MinMaxObserver

    torch.manual_seed(0)
    logits = torch.randn(256, 10) * 4
    logits[torch.arange(256), torch.randint(0, 10, (256,))] += 12  # a confident winner per row
    logits[:, :2] = logits[:, :2].clamp(min=3)  # runner-ups >= 3, most logits far below
    kwargs = {"dtype": torch.int8, "quant_min": -128, "quant_max": 127, "qscheme": torch.per_tensor_affine}
    decisive, full = DecisiveLogitsObserver(**kwargs), MinMaxObserver(**kwargs)
    for chunk in logits.split(64):
        decisive(chunk), full(chunk)
    assert decisive.calculate_qparams()[0] < 0.75 * full.calculate_qparams()[0]
    scale, zero = decisive.calculate_qparams()
    fq_decisive = torch.fake_quantize_per_tensor_affine(logits, float(scale), int(zero), decisive.quant_min,
                                                      decisive.quant_max)
    assert torch.equal(fq_decisive.argmax(1), logits.argmax(1))
    assert float(fq_decisive.max()) == pytest.approx(float(logits.max()), abs=float(scale))
    # a negative runner-up sets the floor a tenth of the span below it
    neg = DecisiveLogitsObserver(**kwargs)
    neg(torch.tensor([[-2.0, 8.0, -30.0], [1.0, 6.0, -20.0]]))
    scale, zero = neg.calculate_qparams()
    assert float((neg.quant_min - zero) * scale) == pytest.approx(-2.0 - 0.1 * (8.0 + 2.0), abs=float(scale))
    # anything but (batch, classes) is min-max
    maps = torch.randn(4, 10, 3, 3)
    spatial, reference = DecisiveLogitsObserver(**kwargs), MinMaxObserver(**kwargs)
    spatial(maps), reference(maps)
    assert [t.item() for t in spatial.calculate_qparams()] == [t.item() for t in reference.calculate_qparams()]


def test_logits_range_option_picks_the_classifier_output_observer():
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from edgeship.quant.pt2e import build_quantizer, dynamic_batch_export

    model = digits_cnn().eval()
    x = torch.randn(4, 1, 16, 16)
    observers = {}
    for mode in ("full", "decisive"):
        cfg = QuantizeConfig(type="quantize", calibration={"logits_range": mode})
        prepared = prepare_pt2e(dynamic_batch_export(model, x[:2]), build_quantizer(cfg, resolve_bits(model, cfg)[0]))
        output = next(n for n in prepared.graph.nodes if n.op == "output")
        observers[mode] = type(getattr(prepared, output.args[0][0].target))
    assert observers == {"full": MinMaxObserver, "decisive": DecisiveLogitsObserver}
