"""Agreement and error metrics between an artifact's logits and a reference's (docs/design.md, validation contract).

One tie rule everywhere: ``argmax`` picks the lowest index (numpy's behaviour), for training metrics and
artifact validation alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Top-2 margins at or below this fraction of the logit scale count as ties (a zero-initialised head
# gives exact zeros; float noise between runtimes is ~1e-6 relative, so 1e-6 separates the two).
TIE_TOLERANCE = 1e-6


def top1_agreement(out: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of samples whose argmax equals the reference's."""
    return float(np.mean(out.argmax(1) == ref.argmax(1)))


def mismatch_when_reference_correct(out: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> float | None:
    """Among samples the reference classifies correctly, the fraction the artifact labels differently."""
    ref_correct = ref.argmax(1) == labels
    if not ref_correct.any():
        return None
    return float(np.mean(out.argmax(1)[ref_correct] != ref.argmax(1)[ref_correct]))


def per_class_flip_rate(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """For each class the reference predicts, the fraction of those samples the artifact flips."""
    r, o = ref.argmax(1), out.argmax(1)
    return {str(int(c)): float(np.mean(o[r == c] != c)) for c in np.unique(r)}


def topk_overlap(out: np.ndarray, ref: np.ndarray, k: int = 5) -> float:
    """Mean |top-k(out) ∩ top-k(ref)| / k (k capped at the class count)."""
    k = min(k, ref.shape[1])
    a = np.argsort(-out, axis=1, kind="stable")[:, :k]
    b = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))


def cosine(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean per-sample cosine similarity; both vectors zero counts 1, exactly one zero counts 0."""
    na, nb = np.linalg.norm(out, axis=1), np.linalg.norm(ref, axis=1)
    dot = np.sum(out * ref, axis=1)
    both_zero, one_zero = (na == 0) & (nb == 0), (na == 0) ^ (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(both_zero, 1.0, np.where(one_zero, 0.0, dot / (na * nb)))
    return float(np.mean(c))


def sqnr_db(out: np.ndarray, ref: np.ndarray) -> float | None:
    """20·log10(‖ref‖ / ‖ref − out‖) over all values; ``None`` when identical (infinite SQNR)."""
    noise = float(np.linalg.norm((ref - out).ravel()))
    signal = float(np.linalg.norm(ref.ravel()))
    if noise == 0:
        return None
    if signal == 0:
        return float("-inf")
    return 20.0 * float(np.log10(signal / noise))


def allowed_count(fraction: float, n: int) -> int:
    """How many of ``n`` samples a fractional threshold lets through: ``floor(fraction * n)``.

    Gates compare counts, not rounded fractions, and a report can say "1 of 32 allowed" where a fraction would hide
    that 32 samples cannot resolve a 0.995 threshold at all.
    """
    return int(fraction * n + 1e-9)


ROUNDING_NOISE = 1e-6  # relative input perturbation the size of a float rounding difference
ROUNDING_DRAWS = 3


def rounding_perturbed(x: np.ndarray, draw: int) -> np.ndarray:
    """``x`` × (1 + 1e-6·N(0, 1)), seeded by ``draw``: what a runtime's own float rounding does to an input."""
    rng = np.random.default_rng(draw)
    return (x * (1 + ROUNDING_NOISE * rng.standard_normal(x.shape))).astype(x.dtype)


def rounding_labels(predict_fn: Any, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per sample, every label the reference gives on ``x`` and on ``ROUNDING_DRAWS`` rounding-perturbed copies.

    A one-level rounding flip grows with depth in a quantized network: inception_v3 at W8A8 changes 5-8 of 360
    labels under a 1e-6 input perturbation, more than a 0.995 gate allows. Such a label is a rounding decision of
    the reference itself, like two logits one step apart. Returns a boolean mask shaped like ``ref``.
    """
    mask = np.zeros(ref.shape, dtype=bool)
    mask[np.arange(len(ref)), ref.argmax(1)] = True
    for draw in range(ROUNDING_DRAWS):
        mask[np.arange(len(ref)), np.asarray(predict_fn(rounding_perturbed(x, draw))).argmax(1)] = True
    return mask


def top_within(ref: np.ndarray, step: float) -> np.ndarray:
    """Per sample, the classes whose reference logit is within ``step`` of the top one (a boolean mask)."""
    return ref >= ref.max(axis=1, keepdims=True) - step


def reference_health(ref: np.ndarray, step: float = 0.0, truth: np.ndarray | None = None) -> dict[str, Any]:
    """How much top-1 agreement can mean against this reference.

    ``tied_fraction`` / ``tied_count``: samples whose top-2 logits are within ``TIE_TOLERANCE`` of the logit scale
    (argmax is then decided by float noise). ``constant``: the logits barely vary across samples.
    ``single_class``: every sample gets the same label (agreement is weak evidence). With ``step`` (a quantized
    reference's output quantization step) ``within_step_count``: samples whose top-2 logits are within one step, so
    a runtime rounding one level differently may pick either label. With ``truth`` (labels): ``accuracy``.
    """
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-12)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    margin = top2[:, 1] - top2[:, 0]
    tied = margin <= TIE_TOLERANCE * scale
    spread = float(ref.std(axis=0).max()) if len(ref) > 1 else 0.0
    labels = ref.argmax(1)
    health = {
        "samples": int(len(ref)),
        "tied_fraction": float(tied.mean()) if len(ref) else 0.0,
        "tied_count": int(tied.sum()),
        "constant": bool(len(ref) > 1 and spread <= TIE_TOLERANCE * scale),
        "single_class": bool(len(ref) > 1 and np.all(labels == labels[0])),
        "logit_scale": scale,
        "predicted_classes": int(len(np.unique(labels))),
        "num_classes": int(ref.shape[1]),
    }
    if truth is not None and len(truth):
        health["accuracy"] = float(np.mean(labels == truth))
    if step > 0:
        health.update({"output_step": step, "within_step_count": int((margin <= step * (1 + 1e-6)).sum())})
    return health


def compare(out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None = None, step: float = 0.0,
            rounding: np.ndarray | None = None) -> dict[str, Any]:
    """Every validation metric of ``out`` against ``ref`` (and the labels when there are any).

    ``step``: the reference's output quantization step (quantized runs). ``top1_agreement_within_step`` then
    counts a sample as agreeing when the artifact's label is one the reference ranks within one step of its top
    logit: two logits one integer level apart are a rounding decision, not a different model. ``rounding``
    (``rounding_labels``) adds the labels the reference itself gives under a rounding-sized input perturbation.
    """
    if out.shape != ref.shape:
        msg = f"artifact output shape {out.shape} differs from the reference's {ref.shape}"
        raise ValueError(msg)
    finite = np.isfinite(out)
    non_finite = int((~finite).sum())
    safe = np.where(finite, out, 0.0)  # error metrics on the finite part; non_finite is gated separately
    diff = np.abs(safe - ref)
    ref_scale = max(float(np.abs(ref).max()), 1e-12)
    m: dict[str, Any] = {
        "samples": int(len(ref)),
        "top1_agreement": top1_agreement(safe, ref),
        "top5_overlap": topk_overlap(safe, ref),
        "max_abs_err": float(diff.max()),
        "mean_abs_err": float(diff.mean()),
        "rel_max_err": float(diff.max()) / ref_scale,
        "cosine": cosine(safe, ref),
        "sqnr_db": sqnr_db(safe, ref),
        "non_finite": non_finite,
        "non_finite_reference": int((~np.isfinite(ref)).sum()),
        "per_class_flip_rate": per_class_flip_rate(safe, ref),
    }
    m["mismatch"] = 1.0 - m["top1_agreement"]
    m["differing_labels"] = int(np.sum(safe.argmax(1) != ref.argmax(1)))
    if step > 0 or rounding is not None:
        accepted = top_within(ref, step * (1 + 1e-6)) if step > 0 else np.zeros(ref.shape, dtype=bool)
        if rounding is not None:
            accepted = accepted | rounding
        near = accepted[np.arange(len(ref)), safe.argmax(1)]
        m.update({"output_step": step, "top1_agreement_within_step": float(near.mean()) if len(ref) else 1.0,
                  "differing_labels_within_step": int((~near).sum())})
    if labels is not None:
        m["accuracy"] = float(np.mean(safe.argmax(1) == labels))
        m["reference_accuracy"] = float(np.mean(ref.argmax(1) == labels))
        m["mismatch_when_reference_correct"] = mismatch_when_reference_correct(safe, ref, labels)
    return m


def label_metrics(out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """The label-preservation metrics (docs/stages/distill.md), per training epoch and in reports.

    ``agreement``, ``mismatch`` and ``mismatches`` (a count), per-class flip rate and, with labels, the
    student's and reference's accuracy and the mismatch rate where the reference is correct.
    """
    agree = top1_agreement(out, ref)
    m: dict[str, Any] = {"agreement": agree, "mismatch": 1.0 - agree,
                         "mismatches": int(np.sum(out.argmax(1) != ref.argmax(1))),
                         "per_class_flip_rate": per_class_flip_rate(out, ref)}
    if labels is not None:
        m["accuracy"] = float(np.mean(out.argmax(1) == labels))
        m["reference_accuracy"] = float(np.mean(ref.argmax(1) == labels))
        m["mismatch_when_reference_correct"] = mismatch_when_reference_correct(out, ref, labels)
        ref_correct = ref.argmax(1) == labels
        m["mismatches_when_reference_correct"] = int(np.sum(out.argmax(1)[ref_correct] != ref.argmax(1)[ref_correct]))
    return m
