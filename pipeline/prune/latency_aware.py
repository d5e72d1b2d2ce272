"""Latency-aware channel removal: the channels that cost the least importance per millisecond saved go first.

A greedy form of HALP's knapsack (Shen et al. 2022): at each step every prunable group offers its ``round_to``
least important channels; their importance (torch-pruning's, normalised per group as its global ranking does)
is divided by the latency the measured lookup table says removing them saves, and the cheapest offer is taken.
Layers that are slow per channel on this runtime go before layers that are cheap to keep, which a MAC budget
cannot see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgeship.prune.latency_table import LatencyTable, Layer

TAYLOR_REFRESH = 10  # steps between gradient passes for Taylor importance (each pass is a few batches)


def group_change(group: Any, names: dict[nn.Module, str], current: dict[str, tuple[int, int]],
                 count: int) -> dict[str, tuple[int, int]]:
    """The (cin, cout) of every table layer after ``count`` channels of ``group`` go."""
    changed = dict(current)
    seen = set()
    for item in group:
        module, handler = item.dep.target.module, item.dep.handler
        name = names.get(module)
        if name not in current or (name, handler) in seen:
            continue
        seen.add((name, handler))
        cin, cout = changed[name]
        kind = getattr(handler, "__name__", "")
        if type(getattr(handler, "__self__", None)).__name__ == "DepthwiseConvPruner":
            cin, cout = cin - count, cout - count
        elif kind == "prune_out_channels":
            cout -= count
        elif kind == "prune_in_channels":
            cin -= count
        changed[name] = (cin, cout)
    return changed


def prune_to_latency(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module], importance: Any,
                     table: LatencyTable, key: str, layers: dict[str, Layer], target_ms: float, round_to: int,
                     refresh: Callable[[], None] | None = None, max_steps: int = 10_000) -> dict[str, Any]:
    """Remove channels from ``model`` in place until the table predicts ``target_ms``; return what happened.

    ``layers`` is the unpruned architecture the table keys on (``key``); ``refresh`` recomputes what the
    importance needs (Taylor's gradients) every ``TAYLOR_REFRESH`` steps.
    """
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = {m: n for n, m in model.named_modules()}
    current = {n: (x.cin, x.cout) for n, x in layers.items()}
    predicted = start = table.predict(key, layers, current)
    steps = 0
    while predicted > target_ms and steps < max_steps:
        if refresh is not None and steps % TAYLOR_REFRESH == 0:
            refresh()
        best: tuple[float, Any, list[int], dict[str, tuple[int, int]], float] | None = None
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
            n = len(group[0].idxs)
            count = n % round_to or round_to  # back onto the grid first, then a grid step
            if n - count < max(round_to, 1):
                continue
            scores = importance(group)
            if scores is None:
                continue
            drop = torch.argsort(scores)[:count]
            changed = group_change(group, names, current, count)
            after = table.predict(key, layers, changed)
            saving = predicted - after
            if saving <= 0:
                continue
            cost = float(scores[drop].sum()) / saving
            if best is None or cost < best[0]:
                best = (cost, group, drop.tolist(), changed, after)
        if best is None:
            break
        _, group, drop, current, predicted = best
        graph.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, drop).prune()
        steps += 1
    return {"steps": steps, "predicted_before_ms": float(start), "predicted_ms": float(predicted),
            "target_ms": target_ms, "reached": bool(predicted <= target_ms)}
