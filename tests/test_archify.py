"""archify: each rewrite on a toy module, the op-support linter on known violations, a short run to zero violations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeship.archify import modules as m
from edgeship.archify.rewrites import archify_model
from edgeship.cli import main
from edgeship.core.errors import ConfigError
from edgeship.opcheck import check, lint, pytorch_ops
from edgeship.recipe import parse_recipe
from edgeship.targets.profile import load_profile
from edgeship.zoo import digits_cnn, digits_resnet
from tests.conftest import load_report, tiny_recipe, write_recipe

ARCHNET = load_profile("archnet")
NPU = load_profile("int8-npu")


def same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5, rtol=1e-4)


# -- exact rewrites: outputs equal before training -----------------------------------------------------------------
def test_patchify_conv_becomes_reshape_plus_linear_exactly():
    conv = nn.Conv2d(3, 8, 4, stride=4)
    assert same(conv, m.PatchLinear(conv), torch.randn(2, 3, 16, 12))


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_as_3x3_centre_tap_is_exact(stride):
    conv = nn.Conv2d(6, 5, 1, stride=stride)
    new = m.centre_tap_3x3(conv)
    assert new.kernel_size == (3, 3)
    assert same(conv, new, torch.randn(2, 6, 9, 8))


def test_residual_add_becomes_concat_conv_exactly():
    from torchvision.models.resnet import BasicBlock

    block = BasicBlock(4, 8, stride=2, downsample=nn.Sequential(nn.Conv2d(4, 8, 1, stride=2), nn.BatchNorm2d(8)))
    nn.init.normal_(block.bn2.running_mean)
    assert same(block, m.ConcatResidual(block), torch.randn(2, 4, 8, 8))


def test_split_conv_partial_sums_are_exact_and_grouped_split_keeps_the_shape():
    conv = nn.Conv2d(10, 6, 3, padding=1)
    x = torch.randn(2, 10, 5, 5)
    assert same(conv, m.SplitConv(conv, 4, exact=True), x)
    grouped = m.SplitConv(conv, 4, exact=False)
    assert all(p.in_channels <= 4 for p in grouped.parts)
    assert grouped(x).shape == conv(x).shape


def test_hard_gate_is_hardsigmoid_and_one_hot_linear_is_the_embedding():
    x = torch.linspace(-5, 5, 101)
    assert torch.allclose(m.HardGate()(x), nn.Hardsigmoid()(x))
    emb = nn.Embedding(7, 3, padding_idx=0)
    ids = torch.tensor([[0, 3, 6], [1, 2, 0]])
    assert torch.allclose(m.OneHotLinear(emb)(ids), emb(ids))


def _se_net(gate: nn.Module) -> nn.Module:
    from torchvision.ops.misc import SqueezeExcitation

    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), SqueezeExcitation(8, 4, scale_activation=lambda: gate),
                         nn.Conv2d(8, 4, 1)).eval()


def _openvino_ops(model: nn.Module, x: torch.Tensor, tmp_path) -> set[str]:
    import openvino as ov

    from edgeship.exporters.openvino_ops import openvino_ops

    ov.save_model(ov.convert_model(torch.export.export(model.eval(), (x,))), str(tmp_path / "m.xml"))
    return {op for u in openvino_ops(tmp_path / "m.xml") for op in u.canonical}


def test_squeeze_excitation_gate_is_exact_and_openvino_cannot_refuse_it_into_hsigmoid(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    model = _se_net(nn.Hardsigmoid())
    nn.init.zeros_(model[1].fc2.bias)  # torchvision's MobileNetV3 init: the folded bias is then exactly 3 everywhere
    student, changes = archify_model(model, NPU, x, only=["swap_activations"])
    assert [(c.rewrite, c.exact) for c in changes] == [("gate_to_hard_gate", True)]
    assert isinstance(student[1], m.HardSqueezeExcitation) and same(model, student, x)
    # The check can fail: OpenVINO fuses a plain relu6(x+3)/6 gate back into HSigmoid, which the NPU lacks.
    plain = _se_net(m.HardGate())
    plain[1].load_state_dict(model[1].state_dict())
    assert "hardsigmoid" in _openvino_ops(plain, x[:1], tmp_path)
    assert not _openvino_ops(student, x[:1], tmp_path) - set(NPU.ops)


def test_adaptive_global_pool_becomes_a_fixed_kernel_pool_exactly():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    x = torch.randn(2, 3, 9, 9)
    student, changes = archify_model(model, NPU, x, only=["fixed_global_pools"])
    assert [(c.rewrite, c.detail) for c in changes] == [("fixed_global_pool", "7x7")]
    assert isinstance(student[1], nn.AvgPool2d) and same(model, student, x)
    # a map wider than the profile's largest pooling kernel keeps the adaptive pool
    assert archify_model(model, NPU, torch.randn(2, 3, 12, 12), only=["fixed_global_pools"])[1] == []


def test_global_pool_folds_into_the_classifier_exactly():
    model = digits_cnn()
    student, changes = archify_model(model, ARCHNET, torch.randn(2, 1, 16, 16), only=["global_pool_to_linear"])
    assert [c.rewrite for c in changes] == ["global_pool_to_linear"]
    assert same(model, student, torch.randn(3, 1, 16, 16))


def test_swin_windows_with_precomputed_constants_are_exact():
    from torchvision.models import SwinTransformer

    swin = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    student, changes = archify_model(swin, NPU, x, only=["static_windows"])
    assert {c.rewrite for c in changes} == {"static_window_attention", "static_patch_merging"}
    assert same(swin, student, x)
    ops = {op for u in pytorch_ops(student, x[:1]) for op in u.canonical}
    assert not ops & {"roll", "gather", "scatter", "compare", "select", "pad"}


def test_swin_windows_pad_maps_that_are_not_a_multiple_of_the_window():
    """A 24x24 input gives 6x6 then 3x3 maps for 4x4 windows: torchvision pads them (to 8x8, shifted; to 4x4,
    unshifted) and lets the zero tokens into attention. The static module does the same with one constant Pad."""
    from torchvision.models import SwinTransformer

    swin = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=5).eval()
    x = torch.randn(2, 3, 24, 24)
    student, changes = archify_model(swin, NPU, x, only=["static_windows"])
    assert [c.detail for c in changes if c.rewrite == "static_window_attention"] == ["6x6"] * 2 + ["3x3"] * 2
    assert same(swin, student, x)
    ops = {op for u in pytorch_ops(student, x[:1]) for op in u.canonical}
    assert "pad" in ops and not ops & {"roll", "gather", "scatter", "compare", "select"}


# -- approximate rewrites: shapes preserved, the profile satisfied --------------------------------------------------
def test_layer_norm_activation_and_stem_rewrites_keep_shapes():
    from torchvision.models.convnext import LayerNorm2d

    x = torch.randn(2, 3, 16, 16)
    for module in (nn.Sequential(LayerNorm2d(3)), nn.Sequential(nn.Conv2d(3, 4, 7, stride=2, padding=3), nn.GELU())):
        student, changes = archify_model(module, ARCHNET, x)
        assert changes and student(x).shape == module(x).shape
    tokens = nn.Sequential(nn.LayerNorm(6), nn.SiLU())
    student, _ = archify_model(tokens, NPU, torch.randn(2, 5, 6))
    assert isinstance(student[0], m.TokenBatchNorm) and isinstance(student[1], nn.ReLU)


def test_digits_resnet_archified_for_archnet_has_no_violation_left():
    x = torch.randn(2, 1, 16, 16)
    model = digits_resnet()
    assert lint(pytorch_ops(model, x[:1]), ARCHNET)  # the teacher breaks the profile
    student, changes = archify_model(model, ARCHNET, x)
    assert {c.rewrite for c in changes} >= {"large_kernel_to_3x3_stack", "activation_to_relu",
                                            "residual_to_concat", "pointwise_to_3x3", "global_pool_to_linear"}
    assert lint(pytorch_ops(student, x[:1]), ARCHNET) == []
    assert student(x).shape == (2, 10)


# -- the linter --------------------------------------------------------------------------------------------------
def test_linter_lists_every_violation_with_reason_and_count(tmp_path):
    from edgeship.core.artifact import InputSpec
    from edgeship.exporters import get_format
    from edgeship.exporters.base import ExportContext

    model = digits_resnet().eval()
    spec = InputSpec(shape=(1, 1, 16, 16), mean=(0.5,), std=(0.5,), num_classes=10)
    fmt = get_format("onnx")
    onnx = fmt.exporter(model, spec, ExportContext(out_dir=tmp_path, log_dir=tmp_path), fmt.options())
    report = check(ARCHNET, model, torch.zeros(1, 1, 16, 16), {"onnx": onnx.path})
    found: dict[tuple[str, str, str], int] = {}
    for v in report.violations:  # rows differ by detail (kernel 5x5 vs 1x1): sum them per reason
        found[(v.level, v.canonical, v.reason)] = found.get((v.level, v.canonical, v.reason), 0) + v.count
    for level in ("pytorch", "onnx"):
        assert found[(level, "add", "unsupported_op")] == 3
        assert found[(level, "conv", "kernel_size")] == 3  # the 5x5 stem and two 1x1 shortcuts
        assert found[(level, "global_avg_pool", "unsupported_op")] == 1
    assert found[("pytorch", "silu", "unsupported_op")] == 1
    assert not report.passed
    assert check(load_profile("cpu"), model, torch.zeros(1, 1, 16, 16), {"onnx": onnx.path}).passed


def test_check_cli_exit_codes(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: mine\nops: {conv: {}, layernorm: {}}\n")
    assert main(["check", "edgeship.zoo:digits_resnet", "--profile", "archnet", "--input-shape", "1,1,16,16",
                 "--num-classes", "10", "--json", str(tmp_path / "c.json")]) == 3
    assert (tmp_path / "c.json").is_file()
    assert main(["check", "edgeship.zoo:digits_resnet", "--profile", "archnet", "--input-shape", "1,1,16,16",
                 "--warn-only"]) == 0
    assert main(["check", "edgeship.zoo:digits_cnn", "--profile", "cpu", "--input-shape", "1,1,16,16"]) == 0
    assert main(["check", "edgeship.zoo:digits_cnn", "--profile", "tpu"]) == 2
    assert main(["check", "edgeship.zoo:digits_cnn", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown op-support profile 'tpu'" in err and "'layernorm'" in err and "layer_norm" in err


def test_a_run_whose_model_violates_the_profile_exits_3(tmp_path):
    recipe = tiny_recipe(tmp_path, **{"latency.enabled": False, "export.formats": ["onnx"],
                                      "check": {"profile": "archnet", "fail_on_unsupported": True}})
    assert main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")]) == 3
    report = load_report(tmp_path / "run")
    assert report["check"]["violations_by_level"] == {"pytorch": 1, "onnx": 1}  # the global average pool


# -- the stage ---------------------------------------------------------------------------------------------------
def archify_recipe(tmp, **archify: object) -> dict:
    return tiny_recipe(tmp, **{"model.source": "edgeship.zoo:digits_resnet", "latency.enabled": False,
                               "model.input.shape": [1, 1, 16, 16],
                               "stages": [{"type": "train", "epochs": 3, "lr": 0.01},
                                          {"type": "archify", "profile": "archnet", **archify}],
                               "check": {"profile": "archnet", "fail_on_unsupported": True}})


def test_short_archify_run_ends_with_zero_violations_on_every_level(tmp_path):
    recipe = archify_recipe(tmp_path, distill={"stem_epochs": 1, "period_epochs": 1, "final_epochs": 2},
                            quantize={"weight_bits": 4, "act_bits": 8, "epochs": 2})
    # Two QAT epochs: this test is about the violations and the lowering, not about how close 2 epochs get to the
    # float student (the gate on that is tested in test_quant_integration).
    recipe["validate"] = {"quantized_gates": {"float_agreement_min": None}}
    assert main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run")]) == 0
    report = load_report(tmp_path / "run")
    assert report["check"]["passed"] and set(report["check"]["ops_seen"]) == {"pytorch", "onnx", "tflite",
                                                                              "openvino"}
    a = report["stages"][1]["metrics"]
    assert a["violations_left"] == 0 and [p["blocks"] for p in a["distill"]["periods"]] == [1, 2, 3, 4, 4]
    assert a["quantized_student_vs_teacher"]["agreement"] > 0.8
    assert all(r["metrics"]["top1_agreement"] >= 0.995 for r in report["results"] if r["gated"])
    # resume rebuilds the student from the rewrites and reloads the trained integers
    assert main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert load_report(tmp_path / "run")["stages"][1]["reused"]


def test_train_only_heads_never_reach_the_student(tmp_path):
    from edgeship.archify.blockwise import BlockwiseOptions, distill_blockwise

    teacher = digits_resnet().eval()
    student, _ = archify_model(teacher, ARCHNET, torch.randn(2, 1, 16, 16))
    keys = set(student.state_dict())
    x = torch.randn(64, 1, 16, 16).numpy()
    hooks = sum(len(mod._forward_hooks) for mod in student.modules())
    result = distill_blockwise(student, teacher, x, x[:16], BlockwiseOptions(stem_epochs=1, period_epochs=0,
                                                                             final_epochs=1),
                               0, tmp_path, lambda _m: None)
    assert result["blocks"] and result["periods"][-1]["final"]
    assert set(student.state_dict()) == keys  # heads lived in the objective only
    assert sum(len(mod._forward_hooks) for mod in student.modules()) == hooks


def test_bad_archify_configs_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="stages.1"):
        parse_recipe(archify_recipe(tmp_path, colour="red"))
    recipe = archify_recipe(tmp_path, rewrites=["fold_everything"])
    assert main(["run", str(write_recipe(tmp_path, recipe)), "--out", str(tmp_path / "r")]) == 2


@pytest.mark.parametrize(("use", "reason"), [
    (dict(op="Conv", canonical=("conv",), kernel=3, stride=4, in_channels=8), "stride"),
    (dict(op="Conv", canonical=("conv",), kernel=3, stride=1, in_channels=1024), "in_channels"),
    (dict(op="Conv", canonical=("conv",), kernel=3, stride=1, in_channels=8, depthwise=True), "depthwise"),
    (dict(op="Conv", canonical=("conv",), kernel=5, stride=1, in_channels=8), "kernel_size"),
    (dict(op="Einsum", canonical=("?Einsum",)), "unmapped_op"),
])
def test_every_reason_code_fires_and_the_cpu_profile_accepts_all(use, reason):
    from edgeship.core.ops import OpUse

    op = OpUse(level="onnx", where="n0", **use)
    assert [v.reason for v in lint([op], ARCHNET)] == [reason]
    assert lint([op], load_profile("cpu")) == []


def test_bit_widths_the_profile_does_not_run_are_violations():
    from edgeship.opcheck import bit_violations
    from edgeship.quant.bits import LayerBits

    bits = [LayerBits("0", "Conv2d", 8, 8, "first conv"), LayerBits("3", "Conv2d", 4, 8, "global"),
            LayerBits("6", "Conv2d", 4, 8, "global"), LayerBits("11", "Linear", 8, 4, "override")]
    found = {(v.reason, v.count) for v in bit_violations(bits, NPU)}
    assert found == {("weight_bits", 2), ("act_bits", 1)}
    assert bit_violations(bits, load_profile("cpu")) == []


def test_batch_norms_that_replace_layer_norms_take_the_data_statistics():
    from edgeship.training.supervised import reestimate_batch_norms

    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(64, 5, 4) * 3 + 1
    student, changes = archify_model(model, NPU, x[:2], only=["layer_norm_to_batch_norm"])
    bn = student[1].bn
    assert torch.equal(bn.running_mean, torch.zeros(6))  # fresh: no normalisation at all
    assert reestimate_batch_norms(student, [c.module for c in changes], x) == 1
    with torch.no_grad():
        tokens = model[0](x).reshape(-1, 6)
    assert torch.allclose(bn.running_mean, tokens.mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and not bn.training
    assert reestimate_batch_norms(student, ["0"], x) == 0  # only the named modules' BatchNorms


def test_archified_student_trains_when_a_swapped_activation_feeds_an_in_place_op():
    """mobilenet_v3's head: Hardswish -> Dropout(inplace=True). Swapped to ReLU (whose backward reads its output),
    the in-place dropout would break every backward pass; the student carries no in-place modules."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True),
                          nn.Linear(32, 10))
    student, changes = archify_model(model, NPU, torch.randn(2, 1, 4, 4))
    assert any(c.rewrite == "activation_to_relu" for c in changes)
    assert not any(getattr(mod, "inplace", False) for mod in student.modules())
    student.train()
    student(torch.randn(8, 1, 4, 4)).sum().backward()


def test_rewrite_names_in_config_match_the_rewrites():
    from edgeship.archify.config import REWRITE_NAMES
    from edgeship.archify.rewrites import REWRITES

    assert tuple(REWRITES) == REWRITE_NAMES  # the config validates recipe names against REWRITE_NAMES


def test_distill_targets_is_the_deprecated_name_of_blocks(tmp_path):
    from tests.conftest import tiny_recipe

    r = parse_recipe(tiny_recipe(tmp_path, stages=[{"type": "train"}, {"type": "archify", "profile": "archnet",
                                                                        "distill": {"targets": ["3"]}}]))
    assert r.stages[1].distill.blocks == ["3"]
    assert r.deprecations == ["archify.distill.targets is deprecated: the key is now archify.distill.blocks "
                              "(the old name still works)"]
