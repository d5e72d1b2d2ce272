"""Gates: turn validation metrics into a ship / no-ship decision, saying which gate failed and by how much."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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


def evaluate_gates(metrics: dict[str, Any], health: dict[str, Any], cfg: GateConfig) -> list[GateResult]:
    """Apply ``cfg`` to one target's ``metrics``; ``health`` is the reference's ``reference_health``.

    A degenerate reference (tied or constant logits) fails its own gate and makes the top-1 gate fail as
    meaningless rather than letting an agreement of 1.0 pass silently.
    """
    results = []
    degenerate = health["tied_fraction"] > cfg.degenerate_reference_max or health["constant"]
    why = (f"reference logits are tied on {health['tied_fraction']:.1%} of samples"
           + (" and constant across samples" if health["constant"] else "")
           + " (e.g. a zero-initialised classifier head or untrained weights): top-1 agreement is meaningless; "
             "load trained weights or re-initialise the head")
    results.append(GateResult(
        "reference_not_degenerate", health["tied_fraction"], cfg.degenerate_reference_max, not degenerate,
        why if degenerate else f"reference top-1 tied on {health['tied_fraction']:.1%} of samples"))

    agree = metrics["top1_agreement"]
    ok = agree >= cfg.top1_agreement_min and not degenerate
    if degenerate:
        detail = f"top-1 agreement {agree:.4f} not accepted: {why}"
    elif ok:
        detail = f"top-1 agreement {agree:.4f} >= {cfg.top1_agreement_min}"
    else:
        flips = round((1 - agree) * metrics["samples"])
        detail = (f"top-1 agreement {agree:.4f} < {cfg.top1_agreement_min} "
                  f"({flips} of {metrics['samples']} labels differ; short by {cfg.top1_agreement_min - agree:.4f})")
    results.append(GateResult("top1_agreement_min", agree, cfg.top1_agreement_min, ok, detail))

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
