"""Gates: turn validation metrics into a ship / no-ship decision, saying which gate failed and by how much."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeship.metrics import allowed_count
from edgeship.recipe import GateConfig


@dataclass
class GateResult:
    """One gate on one artifact x runtime."""

    gate: str
    value: float | None
    threshold: float
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the report."""
        return asdict(self)


# Per-precision defaults of the "auto" gates, by the narrowest weight width of the model (measured; the figures are
# in docs/stages/quantize.md, "Gates on quantized artifacts").
FLOAT_AGREEMENT_AUTO = ((8, 0.99), (3, 0.98), (2, 0.95))  # (weight bits at least, agreement with the float model)
COSINE_AUTO = ((8, 0.995), (3, 0.99), (2, 0.98))  # (weight bits at least, logit cosine with the PT2E model)


def _by_bits(table: tuple[tuple[int, float], ...], bits: int) -> float:
    return next(value for at_least, value in table if bits >= at_least)


def resolve_gates(cfg: GateConfig, weight_bits: int | None, num_classes: int) -> GateConfig:
    """``cfg`` with every ``auto`` threshold replaced by its default.

    ``weight_bits``: the narrowest layer's (None: a float model); ``num_classes`` sets the reference's chance level.
    """
    bits = 8 if weight_bits is None else weight_bits
    updates: dict[str, Any] = {}
    if cfg.float_agreement_min == "auto":
        updates["float_agreement_min"] = _by_bits(FLOAT_AGREEMENT_AUTO, bits) if weight_bits is not None else None
    if cfg.cosine_min == "auto":
        updates["cosine_min"] = _by_bits(COSINE_AUTO, bits)
    if cfg.reference_accuracy_min == "auto":
        chance = 1 / num_classes
        updates["reference_accuracy_min"] = round(chance + ABOVE_CHANCE * (1 - chance), 4)
    return cfg.model_copy(update=updates)


# The reference's own gates: judged once per run (every gated row carries them, the summary lists them once).
REFERENCE_GATES = ("reference_not_degenerate", "reference_accuracy_min")
ABOVE_CHANCE = 0.25  # auto reference_accuracy_min: chance plus a quarter of the way to 1 (0.325 for 10 classes)
COLLAPSE_KEEP = 0.75  # a quantized reference keeping less of the float model's accuracy above chance collapsed
NEAR_CHANCE_CAUSES = (
    "likely causes, most likely first: model.input.mean/std are not the normalisation the model was trained with; "
    "model.input.shape (resolution, channels) differs from training; model.weights are not the trained weights "
    "(or the validation labels number the classes differently from the model); after a prune, distill or archify "
    "stage, that stage may have left it there (more recovery epochs)")
COLLAPSE_HINT = ("the float model is fine, its quantization is not: try quantize.accuracy_control (sensitive layers "
                 "back to 8 bits or float), mode: qat, or wider weight/activation bits")


def degenerate_reason(health: dict[str, Any], cfg: GateConfig) -> str | None:
    """Why top-1 agreement against this reference means nothing, or None when it means something.

    Quantized runs judge the *float* model's ties (``health["float"]``): on an 8-bit grid close logits tie exactly
    and a runtime may pick either (``top1_agreement_within_step`` accepts both), which is quantization, not a
    broken model; a float model with constant or tied logits is broken whatever its quantized twin looks like.
    A quantized reference whose logits are constant while the float model's vary is a collapse of the quantization.
    """
    broken, collapsed = [], False
    for who, h in (("reference", health), ("float model", health.get("float"))):
        if h is None:
            continue
        ties = h["tied_count"] if who == "float model" or "float" not in health else 0
        if ties > max(1, allowed_count(cfg.degenerate_reference_max, h["samples"])):
            broken.append(f"{who} logits are tied on {ties} of {h['samples']} samples")
        if h["constant"]:
            if who == "reference" and "float" in health and not health["float"]["constant"]:
                collapsed = True
            else:
                broken.append(f"{who} logits are constant across samples")
    if broken:
        return ("; ".join(broken) + " (e.g. a zero-initialised classifier head or untrained weights): top-1 "
                "agreement is meaningless; load trained weights or re-initialise the head")
    if collapsed:
        return (f"the quantized model's logits are constant across samples while the float model's vary: "
                f"quantization collapsed it; {COLLAPSE_HINT}")
    return None


def reference_accuracy_gate(health: dict[str, Any], cfg: GateConfig) -> GateResult | None:
    """The gate on the accuracy of the model the user brought, and on whether its quantization kept it.

    Judged on the float model in a quantized run (``health["float"]``), else on the reference; None without labels
    or when the gate is off. A near-chance model means a recipe that does not match the model (the causes are
    listed in order); a quantized reference far below its float model is named a collapse, with the numbers.
    """
    minimum = cfg.reference_accuracy_min
    brought = health.get("float", health)
    accuracy = brought.get("accuracy")
    if accuracy is None or not isinstance(minimum, float | int):
        return None
    k = health["num_classes"]
    chance, who = 1 / k, "float model" if "float" in health else "reference"
    if accuracy < minimum:
        return GateResult("reference_accuracy_min", accuracy, minimum, False,
                          f"{who} accuracy {accuracy:.3f} on {brought['samples']} labelled samples is near chance "
                          f"({chance:.3f} for {k} classes; {brought['predicted_classes']} of {k} classes predicted; "
                          f"gate {minimum:g}): {NEAR_CHANCE_CAUSES}")
    quantized = health.get("accuracy") if "float" in health else None
    if quantized is not None and quantized - chance < COLLAPSE_KEEP * (accuracy - chance):
        return GateResult("reference_accuracy_min", quantized, minimum, False,
                          f"quantization collapsed the model: accuracy {accuracy:.3f} (float) -> {quantized:.3f} "
                          f"(PT2E model), top-1 agreement with the float model {health['agreement_with_float']:.3f}, "
                          f"keeping under {COLLAPSE_KEEP:g} of the float model's accuracy above chance; "
                          f"{COLLAPSE_HINT}")
    kept = "" if quantized is None else f"; the PT2E model keeps {quantized:.3f}"
    return GateResult("reference_accuracy_min", accuracy, minimum, True,
                      f"{who} accuracy {accuracy:.3f} >= {minimum:g} (chance {chance:.3f}){kept}")


def reference_gates(health: dict[str, Any], cfg: GateConfig) -> list[GateResult]:
    """The gates on the reference itself, the same for every row: degeneracy and (with labels) accuracy."""
    why = degenerate_reason(health, cfg)
    gates = [GateResult("reference_not_degenerate", health["tied_fraction"], cfg.degenerate_reference_max,
                        why is None, why or f"reference top-1 tied on {health['tied_count']} of {health['samples']} "
                                            "samples")]
    accuracy = reference_accuracy_gate(health, cfg)
    return gates + ([accuracy] if accuracy else [])


def _count_gate(gate: str, agree: float, differ: int, n: int, minimum: float, what: str) -> GateResult:
    """A label-agreement gate applied as a count: at most floor((1 - minimum) * n) differing labels."""
    allowed = allowed_count(1 - minimum, n)
    ok = differ <= allowed
    detail = (f"{what} {agree:.4f}: {differ} of {n} labels differ, {allowed} allowed by {minimum}"
              + ("" if ok else f" ({differ - allowed} too many)"))
    if allowed == 0 and minimum < 1:
        detail += f"; {n} samples cannot resolve {minimum} (no label may differ), {int(1 / (1 - minimum)) + 1}+ can"
    return GateResult(gate, agree, minimum, ok, detail)


def evaluate_gates(metrics: dict[str, Any], health: dict[str, Any], cfg: GateConfig,
                   vs_float: dict[str, Any] | None = None) -> list[GateResult]:
    """Apply resolved ``cfg`` to one target's ``metrics``; ``health``: the reference's ``reference_health``.

    ``vs_float``: the same artifact compared with the float model (quantized runs). A degenerate reference fails
    its own gate and makes the agreement gates fail as meaningless rather than letting 1.0 pass silently.
    """
    n = metrics["samples"]
    results = reference_gates(health, cfg)
    degenerate = not results[0].passed

    within = "top1_agreement_within_step" in metrics
    agree = metrics["top1_agreement_within_step" if within else "top1_agreement"]
    differ = metrics["differing_labels_within_step" if within else "differing_labels"]
    gate = _count_gate("top1_agreement_min", agree, differ, n, cfg.top1_agreement_min,
                       "top-1 agreement (labels within one output step, or the reference's own under rounding-sized "
                       "input perturbations, count)" if within else "top-1 agreement")
    results.append(_refused(gate, degenerate))

    if vs_float is not None and isinstance(cfg.float_agreement_min, float | int):
        gate = _count_gate("float_agreement_min", vs_float["top1_agreement"], vs_float["differing_labels"], n,
                           cfg.float_agreement_min, "top-1 agreement with the float model")
        results.append(_refused(gate, degenerate))

    if isinstance(cfg.cosine_min, float | int):
        cos = metrics["cosine"]
        ok = cos >= cfg.cosine_min
        results.append(GateResult("cosine_min", cos, cfg.cosine_min, ok,
                                  f"logit cosine {cos:.6f} {'>=' if ok else '<'} {cfg.cosine_min}"
                                  + ("" if ok else f" (SQNR {metrics['sqnr_db']:.1f} dB)"
                                     if metrics["sqnr_db"] is not None else "")))

    rel = metrics["rel_max_err"]
    if cfg.rel_max_err_max is not None:
        ok = rel <= cfg.rel_max_err_max
        over = rel / cfg.rel_max_err_max if cfg.rel_max_err_max else float("inf")
        results.append(GateResult(
            "rel_max_err_max", rel, cfg.rel_max_err_max, ok,
            f"relative max error {rel:.3g} {'<=' if ok else '>'} {cfg.rel_max_err_max:g}"
            + ("" if ok else f" ({over:.1f}x over; max abs error {metrics['max_abs_err']:.3g})")))

    nf = metrics["non_finite"]
    ok = nf <= cfg.non_finite_max
    results.append(GateResult(
        "non_finite_max", nf, cfg.non_finite_max, ok,
        f"{nf} NaN/Inf values in the output" + ("" if ok else f" (allowed {cfg.non_finite_max})")
        + (f"; the reference has {metrics['non_finite_reference']} too" if metrics["non_finite_reference"] else "")))
    return results


def _refused(gate: GateResult, degenerate: bool) -> GateResult:
    """An agreement gate against a degenerate reference fails whatever its value (the reason is said once)."""
    if not degenerate:
        return gate
    return GateResult(gate.gate, gate.value, gate.threshold, False,
                      f"{gate.detail}; not accepted: agreement with a degenerate reference is meaningless "
                      "(reference_not_degenerate)")
