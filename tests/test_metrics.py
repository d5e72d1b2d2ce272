"""Metrics against hand-computed values (docs/design.md's validation contract)."""

import math

import numpy as np
import pytest

from edgeship.gates import evaluate_gates
from edgeship.metrics import (
    compare,
    cosine,
    mismatch_when_reference_correct,
    per_class_flip_rate,
    reference_health,
    sqnr_db,
    top1_agreement,
    topk_overlap,
)
from edgeship.recipe import GateConfig

REF = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [2.0, 1.0, 0.0]], dtype=np.float32)
OUT = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 5.0], [0.0, 1.0, 0.5]], dtype=np.float32)
LABELS = np.array([0, 1, 0, 0])


def test_top1_agreement_counts_matching_argmax():
    # argmax ref: 0,1,2,0 ; out: 0,2,2,1 -> 2 of 4 agree
    assert top1_agreement(OUT, REF) == 0.5


def test_ties_break_to_lowest_index():
    tied = np.array([[1.0, 1.0, 0.0]])
    assert top1_agreement(tied, np.array([[2.0, 0.0, 0.0]])) == 1.0


def test_mismatch_when_reference_correct():
    # reference correct on samples 0,1,3 (pred 0,1,0 vs labels 0,1,0); artifact flips 1 and 3 -> 2/3
    assert mismatch_when_reference_correct(OUT, REF, LABELS) == pytest.approx(2 / 3)
    assert mismatch_when_reference_correct(OUT, REF, np.array([2, 2, 0, 2])) is None


def test_per_class_flip_rate():
    # reference class 0: samples 0,3 -> sample 3 flipped (0.5); class 1: sample 1 flipped (1.0); class 2: 0.0
    assert per_class_flip_rate(OUT, REF) == {"0": 0.5, "1": 1.0, "2": 0.0}


def test_topk_overlap_caps_k_at_class_count():
    assert topk_overlap(OUT, REF, k=5) == 1.0
    assert topk_overlap(OUT, REF, k=1) == 0.5


def test_cosine_zero_vectors():
    z = np.zeros((1, 3))
    assert cosine(z, z) == 1.0
    assert cosine(z, np.ones((1, 3))) == 0.0
    assert cosine(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == 0.0


def test_sqnr_db():
    ref = np.array([[3.0, 4.0]])  # norm 5
    out = np.array([[3.0, 4.5]])  # noise norm 0.5 -> 20*log10(10) = 20 dB
    assert sqnr_db(out, ref) == pytest.approx(20.0)
    assert sqnr_db(ref, ref) is None


def test_compare_errors_and_accuracy():
    m = compare(OUT, REF, LABELS)
    assert m["max_abs_err"] == 2.0
    # |diff| rows: 0 | 0+1+1 | 0 | 2+0+0.5 -> 4.5 over 12 values
    assert m["mean_abs_err"] == pytest.approx(4.5 / 12)
    assert m["rel_max_err"] == pytest.approx(2.0 / 5.0)
    assert m["accuracy"] == 0.25 and m["reference_accuracy"] == 0.75
    assert m["non_finite"] == 0


def test_non_finite_counted_even_when_reference_is_nan_too():
    out = REF.copy()
    out[0, 0] = np.nan
    out[1, 1] = np.inf
    ref = REF.copy()
    ref[0, 0] = np.nan
    m = compare(out, np.nan_to_num(ref), LABELS)
    assert m["non_finite"] == 2
    gates = {g.gate: g for g in evaluate_gates(m, reference_health(REF), GateConfig())}
    assert not gates["non_finite_max"].passed


def test_reference_health_flags_zero_head():
    zeros = np.zeros((8, 10), dtype=np.float32)
    h = reference_health(zeros)
    assert h["tied_fraction"] == 1.0 and h["constant"] and h["single_class"]
    ok = reference_health(REF)
    assert ok["tied_fraction"] == 0.0 and not ok["constant"]


def test_degenerate_reference_fails_even_with_perfect_agreement():
    zeros = np.zeros((8, 10), dtype=np.float32)
    gates = {g.gate: g for g in evaluate_gates(compare(zeros, zeros), reference_health(zeros), GateConfig())}
    assert not gates["reference_not_degenerate"].passed
    assert not gates["top1_agreement_min"].passed
    assert "meaningless" in gates["top1_agreement_min"].detail


def test_gates_pass_on_identical_and_fail_on_perturbed():
    cfg = GateConfig()
    health = reference_health(REF)
    assert all(g.passed for g in evaluate_gates(compare(REF, REF), health, cfg))
    failed = {g.gate for g in evaluate_gates(compare(OUT, REF), health, cfg) if not g.passed}
    assert failed == {"top1_agreement_min", "rel_max_err_max"}


def test_gate_detail_says_by_how_much():
    g = {x.gate: x for x in evaluate_gates(compare(OUT, REF), reference_health(REF), GateConfig())}
    assert "2 of 4 labels differ" in g["top1_agreement_min"].detail
    assert math.isclose(g["rel_max_err_max"].value, 0.4)
    assert "x over" in g["rel_max_err_max"].detail
