"""The archify rewrites: each finds the modules a profile cannot run and swaps in ``modules.py`` replacements.

Rewrites act on modules (names, and so teacher weights, are kept wherever shapes allow); a rewrite marked exact
is proven on a probe input and undone with an error if the outputs moved. ``REWRITES`` lists them in the order
they run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeship.archify import modules as m
from edgeship.targets.profile import OpProfile

ACTIVATIONS_TO_SWAP = (nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.ReLU6)
GATES = (nn.Hardsigmoid, nn.Sigmoid)


@dataclass
class Change:
    """One module replaced: which rewrite, where, and whether the outputs are provably unchanged."""

    rewrite: str
    module: str
    exact: bool
    detail: str = ""


@dataclass
class Probe:
    """Input shapes of every module on the example input (modules called more than once are listed once)."""

    shapes: dict[str, tuple[int, ...]]
    output: torch.Tensor  # the model's output on the example, before the rewrite

    @classmethod
    def of(cls, model: nn.Module, example: torch.Tensor) -> Probe:
        """Run ``example`` once through ``model`` (eval) recording each module's first input shape."""
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []
        for name, mod in model.named_modules():
            def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                if args and isinstance(args[0], torch.Tensor):
                    shapes.setdefault(name, tuple(args[0].shape))
            handles.append(mod.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                output = model.eval()(example)
        finally:
            for h in handles:
                h.remove()
        return cls(shapes, output)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, new)


def _replace_all(model: nn.Module, match: Callable[[str, nn.Module], bool]) -> list[tuple[str, nn.Module]]:
    return [(n, mod) for n, mod in list(model.named_modules()) if n and match(n, mod)]


# -- normalisation and activations -------------------------------------------------------------------------------
def layer_norm_to_batch_norm(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """LayerNorm over channels -> BatchNorm (BatchNorm2d for torchvision's LayerNorm2d; over the last dim else)."""
    if profile.allows("layer_norm") or not profile.allows("batch_norm"):
        return []
    changes = []
    for name, ln in _replace_all(model, lambda _n, mod: isinstance(mod, nn.LayerNorm)):
        if len(ln.normalized_shape) != 1:
            continue
        c = ln.normalized_shape[0]
        channels_first = type(ln).__name__ == "LayerNorm2d"
        new: nn.Module = nn.BatchNorm2d(c, eps=ln.eps) if channels_first else m.TokenBatchNorm(c, ln.eps)
        bn = new if channels_first else new.bn
        if ln.elementwise_affine:
            with torch.no_grad():
                bn.weight.copy_(ln.weight)
                if ln.bias is not None:
                    bn.bias.copy_(ln.bias)
        set_module(model, name, new)
        changes.append(Change("layer_norm_to_batch_norm", name, False, type(new).__name__))
    return changes


def swap_activations(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """GELU/SiLU/Hardswish/... -> the profile's activation; Hardsigmoid/Sigmoid gates -> relu6(x+3)/6 (or it)."""
    names = {nn.GELU: "gelu", nn.SiLU: "silu", nn.Hardswish: "hardswish", nn.Tanh: "tanh", nn.ReLU6: "relu6",
             nn.Hardsigmoid: "hardsigmoid", nn.Sigmoid: "sigmoid"}
    hard_gate_ok = all(profile.allows(op) for op in ("relu6", "add", "mul"))
    changes = []
    if hard_gate_ok:
        changes += _squeeze_excitations(model, profile)
    for name, act in _replace_all(model, lambda _n, mod: isinstance(mod, ACTIVATIONS_TO_SWAP + GATES)):
        kind = names.get(type(act), type(act).__name__.lower())
        if profile.allows(kind):
            continue
        if isinstance(act, GATES) and hard_gate_ok:
            set_module(model, name, m.HardGate())
            changes.append(Change("gate_to_hard_gate", name, isinstance(act, nn.Hardsigmoid), type(act).__name__))
        else:
            set_module(model, name, nn.ReLU6() if profile.activation == "relu6" else nn.ReLU())
            changes.append(Change("activation_to_" + profile.activation, name, False, type(act).__name__))
    return changes


def _squeeze_excitations(model: nn.Module, profile: OpProfile) -> list[Change]:
    """Torchvision SE blocks with a gate the profile lacks -> ``HardSqueezeExcitation`` (constants folded)."""
    from torchvision.ops.misc import SqueezeExcitation

    def gated(_n: str, mod: nn.Module) -> bool:
        return isinstance(mod, SqueezeExcitation) and isinstance(mod.scale_activation, GATES) \
            and not profile.allows("hardsigmoid" if isinstance(mod.scale_activation, nn.Hardsigmoid) else "sigmoid")

    changes = []
    for name, se in _replace_all(model, gated):
        set_module(model, name, m.HardSqueezeExcitation(se))
        changes.append(Change("gate_to_hard_gate", name, isinstance(se.scale_activation, nn.Hardsigmoid),
                              type(se.scale_activation).__name__ + " (squeeze-excitation)"))
    return changes


def embedding_to_one_hot(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """Embedding lookups -> one-hot x fully connected (when the profile has no embedding/gather)."""
    if profile.allows("embedding") or profile.allows("gather"):
        return []
    changes = []
    for name, emb in _replace_all(model, lambda _n, mod: isinstance(mod, nn.Embedding)):
        set_module(model, name, m.OneHotLinear(emb))
        changes.append(Change("embedding_to_one_hot", name, True))
    return changes


# -- transformer plumbing ----------------------------------------------------------------------------------------
def static_windows(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """Swin's shifted-window attention and patch merging with precomputed constants (no roll/gather/scatter)."""
    if profile.allow_all:
        return []
    from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention

    changes = []
    for name, mod in _replace_all(model, lambda _n, x: isinstance(x, ShiftedWindowAttention | PatchMerging)):
        shape = probe.shapes.get(name)
        if shape is None or len(shape) != 4:
            continue
        if isinstance(mod, PatchMerging):
            if shape[1] % 2 or shape[2] % 2:
                continue
            set_module(model, name, m.StaticPatchMerging(mod))
            changes.append(Change("static_patch_merging", name, True))
        else:
            set_module(model, name, m.StaticWindowAttention(mod, shape[1], shape[2]))
            changes.append(Change("static_window_attention", name, True, f"{shape[1]}x{shape[2]}"))
    return changes


# -- convolutions and pooling ------------------------------------------------------------------------------------
def convolutions(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """Patchify convs -> reshape + FC; 1x1 -> 3x3 centre tap; large stems -> 3x3 stacks; wide convs -> split."""
    if profile.allow_all or not profile.allows("conv"):
        return []
    rule = profile.rule("conv")
    changes = []
    for name, conv in _replace_all(model, lambda _n, x: type(x) is nn.Conv2d):
        k, s = conv.kernel_size[0], conv.stride[0]
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels
        kernel_ok = profile.kernel_ok("conv", k)
        stride_ok = profile.stride_ok("conv", s)
        shape = probe.shapes.get(name)
        if (not kernel_ok or not stride_ok) and k == s and conv.padding in ((0, 0), 0) and conv.groups == 1 \
                and profile.allows("linear") and shape is not None and shape[2] % k == 0 and shape[3] % k == 0:
            set_module(model, name, m.PatchLinear(conv))
            changes.append(Change("patchify_to_linear", name, True, f"{k}x{k}/s{s}"))
            continue
        if not kernel_ok and k == 1 and profile.kernel_ok("conv", 3):
            conv_new = m.centre_tap_3x3(conv)
            set_module(model, name, conv_new)
            changes.append(Change("pointwise_to_3x3", name, True))
            conv = conv_new
        elif not kernel_ok and k > 3 and k % 2 and not depthwise and conv.groups == 1 and profile.kernel_ok("conv", 3):
            set_module(model, name, m.conv3x3_stem(conv))
            changes.append(Change("large_kernel_to_3x3_stack", name, False, f"{k}x{k} -> {(k - 1) // 2} x 3x3"))
            continue
        if rule.max_in_channels and conv.in_channels > rule.max_in_channels and not depthwise and conv.groups == 1:
            exact = profile.allows("add")
            set_module(model, name, m.SplitConv(conv, rule.max_in_channels, exact))
            changes.append(Change("split_channels", name, exact, f"{conv.in_channels} inputs"))
    return changes


def max_pools(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """A max-pool the profile cannot run (e.g. 3x3/s2 after a stem) -> the allowed size with the same output."""
    if profile.allow_all or not profile.allows("max_pool"):
        return []
    rule = profile.rule("max_pool")
    changes = []
    for name, pool in _replace_all(model, lambda _n, x: isinstance(x, nn.MaxPool2d)):
        k = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
        s = pool.stride if isinstance(pool.stride, int) else pool.stride[0]
        if profile.kernel_ok("max_pool", k) and profile.stride_ok("max_pool", s):
            continue
        shape = probe.shapes.get(name)
        for size in rule.kernel_sizes or [s]:
            new = nn.MaxPool2d(size, size)
            if shape is not None and new(torch.zeros(shape)).shape == pool(torch.zeros(shape)).shape:
                set_module(model, name, new)
                changes.append(Change("max_pool_resize", name, False, f"{k}x{k}/s{s} -> {size}x{size}/s{size}"))
                break
    return changes


def _is_global_pool(_name: str, mod: nn.Module) -> bool:
    return isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1))


def global_pool_to_linear(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """Global average pool + classifier -> one classifier over the flattened map (exact: the pool is linear)."""
    if profile.allow_all or profile.allows("global_avg_pool") or profile.allows("avg_pool"):
        return []
    pools = _replace_all(model, _is_global_pool)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    linears = [(n, x) for n, x in model.named_modules() if isinstance(x, nn.Linear)]
    changes = []
    for name, _pool in pools:
        shape = probe.shapes.get(name)
        if shape is None or len(shape) != 4:
            continue
        # The classifier the pooled features feed: the first linear defined after the pool that takes C inputs.
        after = [(n, lin) for n, lin in linears if lin.in_features == shape[1] and order[n] > order[name]]
        if not after:
            continue
        lin_name, lin = after[0]
        hw = shape[2] * shape[3]
        new = nn.Linear(lin.in_features * hw, lin.out_features, bias=lin.bias is not None)
        with torch.no_grad():
            new.weight.copy_(lin.weight.repeat_interleave(hw, dim=1) / hw)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        set_module(model, name, nn.Identity())
        set_module(model, lin_name, new)
        changes.append(Change("global_pool_to_linear", f"{name} + {lin_name}", True, f"{hw} positions"))
    return changes


def fixed_global_pools(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """Adaptive global average pool -> an average pool with a fixed kernel the size of the map (exact).

    Converters lower the adaptive form to reduce-means whose axes depend on the surrounding layout (ConvNeXt's
    head comes out as a MEAN over NCHW axes in TFLite and a strided Gather in ONNX); a fixed-kernel pool lowers to
    the one pooling op every NPU delegate has. Done when the profile's average pool takes a kernel that size.
    """
    if profile.allow_all or not profile.allows("avg_pool"):
        return []
    changes = []
    for name, _pool in _replace_all(model, _is_global_pool):
        shape = probe.shapes.get(name)
        if shape is None or len(shape) != 4 or not profile.kernel_ok("avg_pool", max(shape[2], shape[3])):
            continue
        set_module(model, name, nn.AvgPool2d((shape[2], shape[3])))
        changes.append(Change("fixed_global_pool", name, True, f"{shape[2]}x{shape[3]}"))
    return changes


def residual_to_concat(model: nn.Module, profile: OpProfile, probe: Probe) -> list[Change]:
    """ResNet blocks' ``out + identity`` -> concat + 3x3 conv + BN + ReLU, when the profile has no add."""
    if profile.allow_all or profile.allows("add") or not profile.allows("concat"):
        return []
    from torchvision.models.resnet import BasicBlock, Bottleneck

    changes = []
    for name, block in _replace_all(model, lambda _n, x: isinstance(x, BasicBlock | Bottleneck)):
        set_module(model, name, m.ConcatResidual(block))
        changes.append(Change("residual_to_concat", name, True))
    return changes


Rewrite = Callable[[nn.Module, OpProfile, Probe], list[Change]]
REWRITES: dict[str, Rewrite] = {
    "static_windows": static_windows,
    "layer_norm_to_batch_norm": layer_norm_to_batch_norm,
    "swap_activations": swap_activations,
    "embedding_to_one_hot": embedding_to_one_hot,
    "residual_to_concat": residual_to_concat,
    "convolutions": convolutions,
    "max_pools": max_pools,
    "global_pool_to_linear": global_pool_to_linear,
    "fixed_global_pools": fixed_global_pools,
}


def archify_model(model: nn.Module, profile: OpProfile, example: torch.Tensor,
                  only: list[str] | None = None) -> tuple[nn.Module, list[Change]]:
    """A rewritten copy of ``model`` for ``profile`` and the list of changes; exact rewrites are verified.

    ``only``: run just these rewrites (names of ``REWRITES``). Raises ``RuntimeError`` when a rewrite that
    claims exactness changes the outputs (a bug, not a user error).
    """
    student = copy.deepcopy(model).eval()
    changes: list[Change] = []
    for name, rewrite in REWRITES.items():
        if only is not None and name not in only:
            continue
        probe = Probe.of(student, example)
        before = probe.output
        done = rewrite(student, profile, probe)
        student.eval()
        if done and all(c.exact for c in done):
            with torch.no_grad():
                after = student(example)
            err = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
            if err > 1e-4:
                raise RuntimeError(f"archify rewrite {name} claims to be exact but moved the outputs by {err:.2e}")
        changes.extend(done)
    for module in student.modules():
        # A swapped activation may now feed an in-place op (mobilenet_v3: ReLU -> Dropout(inplace=True)); ReLU's
        # backward needs its output intact, so training the student would fail. In-place only saves memory.
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return student, changes
