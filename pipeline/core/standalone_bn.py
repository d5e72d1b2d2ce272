"""BatchNorms that no convolution precedes, as depthwise 1x1 convolutions, so they quantize like any conv.

``prepare_pt2e`` folds a BatchNorm into the convolution before it; one that follows something else (a reshape,
an add, a patchify-as-linear) is annotated by no quantizer pattern and stays in float. litert-torch then lowers
it to float SUB/MUL/MUL/ADD, ops an int8 NPU lacks (measured: 5 float SUBs in archified convnext_tiny at W8A8,
from the LayerNorms of its stem, downsamples and head turned into BatchNorms). In eval mode a BatchNorm is the
per-channel affine ``x·g + b`` with ``g = γ/√(var+ε)``, ``b = β − mean·g``: exactly a depthwise 1x1 convolution.
The float TFLite export uses the same pass: litert-torch lowers such a BatchNorm to the same float ops at fp32.
"""

from __future__ import annotations

import operator

import torch

from edgeship.core.graph import node_module

BATCH_NORM = "aten.batch_norm.default"
CONV2D = "aten.conv2d.default"


def _folded_by_prepare(source: object) -> bool:
    """Whether ``prepare_pt2e`` will fold a (4-D) BatchNorm fed by ``source`` into a convolution."""
    return isinstance(source, torch.fx.Node) and str(source.target) == CONV2D and len(source.users) == 1


def standalone_batch_norms_to_depthwise(model: torch.fx.GraphModule) -> list[str]:
    """Replace every eval-mode 4-D BatchNorm not fed by a convolution with a depthwise 1x1 conv, in place.

    Returns the replaced nodes' module paths. The outputs are unchanged (up to float rounding).
    """
    graph = model.graph
    replaced = []
    for node in list(graph.nodes):
        if node.op != "call_function" or str(node.target) != BATCH_NORM:
            continue
        x, gamma, beta, mean, var, training, _momentum, eps = node.args[:8]
        val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
        if training or _folded_by_prepare(x) or val is None or val.dim() != 4:
            continue
        get = operator.attrgetter
        mean_t, var_t = get(mean.target)(model), get(var.target)(model)
        channels = mean_t.numel()
        gamma_t = get(gamma.target)(model) if gamma is not None else torch.ones(channels)
        beta_t = get(beta.target)(model) if beta is not None else torch.zeros(channels)
        with torch.no_grad():
            scale = gamma_t / torch.sqrt(var_t + eps)
            weight = scale.reshape(channels, 1, 1, 1).clone()
            bias = (beta_t - mean_t * scale).clone()
        stem = node.name + "_dw"
        model.register_parameter(stem + "_weight", torch.nn.Parameter(weight))
        model.register_parameter(stem + "_bias", torch.nn.Parameter(bias))
        with graph.inserting_before(node):
            w_node = graph.get_attr(stem + "_weight")
            b_node = graph.get_attr(stem + "_bias")
            w_node.meta["val"], b_node.meta["val"] = weight, bias
            conv = graph.call_function(torch.ops.aten.conv2d.default,
                                       (x, w_node, b_node, [1, 1], [0, 0], [1, 1], channels))
        conv.meta = dict(node.meta)  # module stack (per-layer bit widths key on it) and the output's fake value
        node.replace_all_uses_with(conv)
        graph.erase_node(node)
        for attr in (gamma, beta, mean, var):
            if isinstance(attr, torch.fx.Node) and not attr.users:
                graph.erase_node(attr)
        replaced.append(node_module(conv) or node.name)
    if replaced:
        graph.lint()
        model.recompile()
    return replaced
