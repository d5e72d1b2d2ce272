"""Accuracy-aware fallback for PTQ: put the layers whose quantization costs most agreement back to 8 bits or float.

The target is top-1 agreement with the float model (the model the user validated) on held-out rows of the
calibration source, never on the validation split the gates judge. Sensitivity is measured by quantizing the model
with one layer left out (every layer, once); the most sensitive layers then fall back one at a time, re-quantizing
and re-measuring after each, until the target holds or ``max_fallback_layers`` is reached. The target must hold on
every gated runtime, not only on the PT2E model: a candidate the PT2E model meets is exported and measured on each
runtime before it is accepted. Every exported format lowers the same PT2E graph, so every runtime gets the same
decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from edgeship.inference import predict
from edgeship.metrics import top1_agreement
from edgeship.quant.bits import LayerBits
from edgeship.quant.config import AccuracyControl

Quantize = Callable[[list[LayerBits], frozenset[str]], nn.Module]  # (bit table, float layers) -> converted model
# (converted model, its plan) -> per gated runtime {"logits", "p50_ms"} or {"error"} (edgeship.runner.probe)
Probe = Callable[[nn.Module, "Plan"], dict[str, dict[str, Any]]]


@dataclasses.dataclass
class Plan:
    """Which layers fall back: sub-8-bit layers to 8 bits (in the table), 8-bit layers to float."""

    table: list[LayerBits]
    float_layers: frozenset[str] = frozenset()

    def fall_back(self, name: str) -> Plan:
        """A copy with ``name`` moved one step towards float (to 8 bits, or to float from 8 bits)."""
        lb = next(b for b in self.table if b.name == name)
        if lb.weight_bits < 8 or lb.act_bits < 8:
            wider = dataclasses.replace(lb, weight_bits=8, act_bits=max(lb.act_bits, 8), reason="accuracy control")
            return Plan([wider if b.name == name else b for b in self.table], self.float_layers)
        return Plan(self.table, self.float_layers | {name})

    def change(self, name: str, before: Plan) -> str:
        """What falling back did to ``name``, relative to ``before``: ``W4A8 -> W8A8`` or ``W8A8 -> float``."""
        old = next(b for b in before.table if b.name == name)
        new = next(b for b in self.table if b.name == name)
        return f"W{old.weight_bits}A{old.act_bits} -> " + (
            "float" if name in self.float_layers and name not in before.float_layers
            else f"W{new.weight_bits}A{new.act_bits}")


def _score(model: nn.Module, x: np.ndarray, float_logits: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement with the float logits, their relative squared error) of ``model`` on ``x``."""
    out = predict(model, x)
    err = float(np.mean((out - float_logits) ** 2) / max(float(np.mean(float_logits**2)), 1e-12))
    return top1_agreement(out, float_logits), err


def _on_runtimes(probe: Probe, model: nn.Module, plan: Plan, float_logits: np.ndarray,
                 log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Each gated runtime's agreement with the float logits (and p50) on the candidate ``plan``."""
    measured = {}
    for label, r in probe(model, plan).items():
        if "error" in r:
            measured[label] = {"error": r["error"]}
            continue
        measured[label] = {"agreement": top1_agreement(r["logits"], float_logits),
                           **({"p50_ms": r["p50_ms"]} if "p50_ms" in r else {})}
    log("  accuracy control: on the runtimes " + ", ".join(
        f"{k} {v['agreement']:.4f}" if "agreement" in v else f"{k} not measured ({v['error']})"
        for k, v in measured.items()))
    return measured


def _holds(measured: dict[str, dict[str, Any]] | None, target: float) -> bool:
    """True when every runtime that ran meets ``target`` (a runtime that could not run is the run's to report)."""
    return measured is None or all(v["agreement"] >= target for v in measured.values() if "agreement" in v)


def _latency_cost(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per runtime, the p50 of the plain quantization and of the fallback decision, and their ratio."""
    cost = {}
    for label, b in before.items():
        a = after.get(label, {})
        if "p50_ms" in b and "p50_ms" in a:
            cost[label] = {"before_p50_ms": b["p50_ms"], "after_p50_ms": a["p50_ms"],
                           "ratio": round(a["p50_ms"] / b["p50_ms"], 3)}
    return cost


def accuracy_control(cfg: AccuracyControl, table: list[LayerBits], quantize: Quantize, float_model: nn.Module,
                     x: np.ndarray, log: Callable[[str], None],
                     probe: Probe | None = None) -> tuple[nn.Module, Plan, dict[str, Any]]:
    """Quantize per ``table``; fall back the most sensitive layers until agreement holds on the held-out rows.

    The target is top-1 agreement with ``float_model`` of at least ``1 - cfg.max_drop`` on ``x``: on the PT2E
    model and, with ``probe``, on every gated runtime too. The runtimes are measured on the plain quantization
    (what the fallback costs in latency is against it) and on each candidate the PT2E model accepts. Returns the
    converted model, the plan and a report (baseline, sensitivity ranking, each fallback and what it reached).
    """
    target = 1.0 - cfg.max_drop
    float_logits = predict(float_model, x)
    plan = Plan(list(table))
    model = quantize(plan.table, plan.float_layers)
    agreement, err = _score(model, x, float_logits)
    report: dict[str, Any] = {"target_agreement": target, "held_out_rows": int(len(x)), "baseline_agreement": agreement,
                              "baseline_relative_error": err, "fallback": [], "sensitivity": []}
    log(f"  accuracy control: agreement with the float model on {len(x)} held-out rows {agreement:.4f} "
        f"(target {target:.4f})")
    baseline = _on_runtimes(probe, model, plan, float_logits, log) if probe else None
    report["baseline_runtimes"] = baseline
    measured, measured_plan = baseline, plan  # the last runtime figures, and the plan they were measured on

    if not (agreement >= target and _holds(baseline, target)) and cfg.max_fallback_layers > 0:
        sensitivity = []
        for i, lb in enumerate(table):
            trial = plan.fall_back(lb.name)
            a, e = _score(quantize(trial.table, trial.float_layers), x, float_logits)
            sensitivity.append({"layer": lb.name, "agreement_gain": a - agreement, "error_reduction": err - e})
            log(f"  accuracy control: sensitivity {i + 1}/{len(table)} {lb.name}: +{a - agreement:.4f} agreement")
        sensitivity.sort(key=lambda s: (s["agreement_gain"], s["error_reduction"]), reverse=True)
        report["sensitivity"] = sensitivity[:16]

        for s in sensitivity[:cfg.max_fallback_layers]:
            before, plan = plan, plan.fall_back(s["layer"])
            model = quantize(plan.table, plan.float_layers)
            agreement, err = _score(model, x, float_logits)
            step = {"layer": s["layer"], "change": plan.change(s["layer"], before), "agreement": agreement,
                    "relative_error": err}
            log(f"  accuracy control: {s['layer']} {step['change']}: agreement {agreement:.4f}")
            if agreement >= target and probe:
                measured, measured_plan = _on_runtimes(probe, model, plan, float_logits, log), plan
                step["runtimes"] = measured
            report["fallback"].append(step)
            if agreement >= target and _holds(measured, target):
                break

    if probe and measured_plan is not plan:  # the last candidate never reached the runtimes: report them
        measured = _on_runtimes(probe, model, plan, float_logits, log)
    met = agreement >= target and _holds(measured, target)
    if probe:
        report["runtimes"] = measured
        report["latency_cost"] = _latency_cost(baseline, measured) if measured is not baseline else {}
    return model, plan, {**report, "agreement": agreement, "met": met}
