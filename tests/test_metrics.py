"""Metrics against hand-computed values (docs/design.md's validation contract)."""

import math

import numpy as np
import pytest

from edgeship.gates import evaluate_gates, resolve_gates
from edgeship.metrics import (
    allowed_count,
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


# -- quantized references: ties on the output grid, the float model's health, counts, cosine ---------------------
STEP = 0.25


def grid_logits(n: int = 40, seed: int = 0) -> np.ndarray:
    """Quantized-looking logits (multiples of STEP) with a clear winner per sample."""
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=(n, 10)) / STEP) * STEP
    ref[np.arange(n), rng.integers(0, 10, n)] += 4.0
    return ref.astype(np.float32)


def quantized_gates(**kw: object) -> GateConfig:
    return resolve_gates(GateConfig(top1_agreement_min=0.995, rel_max_err_max=None, float_agreement_min="auto",
                                    cosine_min="auto", **kw), weight_bits=8, num_classes=10)


def test_a_label_one_output_step_away_is_a_rounding_not_a_disagreement():
    ref = grid_logits()
    out = ref.copy()
    top = ref.argmax(1)
    ref[0, (top[0] + 1) % 10] = ref[0, top[0]]  # an exact tie on the grid: index order picks the label
    out[0] = ref[0]
    out[0, (top[0] + 1) % 10] += STEP  # the runtime rounds one level up: the other tied class wins
    health = {**reference_health(ref, STEP), "float": reference_health(ref + 0.01)}
    m = compare(out, ref, step=STEP)
    assert m["differing_labels"] == 1 and m["differing_labels_within_step"] == 0
    gates = {g.gate: g for g in evaluate_gates(m, health, quantized_gates(), compare(out, ref))}
    assert gates["top1_agreement_min"].passed and gates["reference_not_degenerate"].passed
    # Two steps away is a different label: the same gate fails.
    out2 = ref.copy()
    out2[1, (top[1] + 1) % 10] = ref[1, top[1]] + 2 * STEP
    m2 = compare(out2, ref, step=STEP)
    assert m2["differing_labels_within_step"] == 1
    assert not {g.gate: g for g in evaluate_gates(m2, health, quantized_gates())}["top1_agreement_min"].passed


def test_a_float_model_with_constant_logits_fails_a_quantized_run_whose_logits_look_varied():
    ref = grid_logits()  # quantization noise made the PT2E logits vary
    flat = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (len(ref), 1))
    health = {**reference_health(ref, STEP), "float": reference_health(flat)}
    gates = {g.gate: g for g in evaluate_gates(compare(ref, ref, step=STEP), health, quantized_gates(),
                                               compare(ref, flat))}
    assert not gates["reference_not_degenerate"].passed
    assert "float model logits are constant" in gates["reference_not_degenerate"].detail
    assert not gates["top1_agreement_min"].passed  # agreement with a degenerate reference is not accepted
    healthy = {**reference_health(ref, STEP), "float": reference_health(ref + 0.01)}
    assert {g.gate: g for g in evaluate_gates(compare(ref, ref, step=STEP), healthy,
                                              quantized_gates())}["reference_not_degenerate"].passed


def test_the_float_agreement_gate_fails_a_faithful_lowering_of_a_bad_quantization():
    ref = grid_logits()
    float_ref = ref.copy()
    float_ref[:2] = np.roll(float_ref[:2], 1, axis=1)  # quantization changed 2 of 40 labels (0.95 < 0.99)
    health = {**reference_health(ref, STEP), "float": reference_health(float_ref)}
    gates = {g.gate: g for g in evaluate_gates(compare(ref, ref, step=STEP), health, quantized_gates(),
                                               compare(ref, float_ref))}
    assert gates["top1_agreement_min"].passed  # the artifact is faithful to its PT2E model ...
    assert not gates["float_agreement_min"].passed  # ... which is not faithful to the float model
    assert "2 of 40 labels differ, 0 allowed by 0.99" in gates["float_agreement_min"].detail


def test_the_cosine_gate_catches_logits_far_off_with_the_same_labels():
    ref = grid_logits()
    out = ref.copy()
    low = out < out.max(1, keepdims=True)
    out[low] = -10 * np.abs(out[low]) - 10  # every label kept, the logits wrong (relative error > 1)
    gates = {g.gate: g for g in evaluate_gates(compare(out, ref, step=STEP), reference_health(ref, STEP),
                                               quantized_gates())}
    assert gates["top1_agreement_min"].passed and not gates["cosine_min"].passed


def test_thresholds_are_counts_and_a_single_tie_does_not_make_a_small_reference_degenerate():
    ref = grid_logits(32)
    ref[0, :2] = 9.0  # one exact float tie in 32 samples (3%)
    gates = {g.gate: g for g in evaluate_gates(compare(ref, ref), reference_health(ref), GateConfig())}
    assert gates["reference_not_degenerate"].passed
    assert "32 samples cannot resolve 0.999" in gates["top1_agreement_min"].detail
    ref[1, :2] = 9.0  # a second one: no longer chance
    assert not {g.gate: g for g in evaluate_gates(compare(ref, ref), reference_health(ref),
                                                  GateConfig())}["reference_not_degenerate"].passed
    assert allowed_count(0.005, 360) == 1 and allowed_count(0.005, 199) == 0


def test_auto_gates_resolve_by_the_narrowest_weight_width():
    cfg = GateConfig(float_agreement_min="auto", cosine_min="auto")
    assert resolve_gates(cfg, 8, 10).float_agreement_min == 0.99
    assert resolve_gates(cfg, 4, 10).float_agreement_min == 0.98
    assert resolve_gates(cfg, 2, 10).float_agreement_min == 0.95
    assert resolve_gates(cfg, None, 10).float_agreement_min is None  # fp32: there is no float twin to compare with
    assert resolve_gates(cfg, 2, 10).cosine_min < resolve_gates(cfg, 8, 10).cosine_min
    with pytest.raises(ValueError, match="fraction"):
        GateConfig(float_agreement_min=1.5)


def test_a_recipe_naming_one_quantized_gate_keeps_the_other_quantized_defaults():
    from edgeship.recipe import ValidateConfig

    q = ValidateConfig(quantized_gates={"float_agreement_min": None}).quantized_gates
    assert q.float_agreement_min is None
    assert (q.top1_agreement_min, q.rel_max_err_max, q.cosine_min) == (0.995, None, "auto")  # not the fp32 gates'


def test_a_label_the_reference_gives_under_rounding_noise_is_a_rounding_not_a_disagreement():
    from edgeship.metrics import rounding_labels

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    x[0] = [1.0, 1.0 + 1e-7, 0.0, 0.0]  # a knife-edge sample: rounding-sized noise decides its label

    def reference(inputs):  # a "network" whose logits are its inputs
        return inputs

    ref = reference(x)
    mask = rounding_labels(reference, x, ref)
    assert mask[0, :2].all() and mask[1:].sum() == 39  # only the knife-edge sample has two labels
    out = ref.copy()
    out[0] = [1.0 + 1e-7, 1.0, 0.0, 0.0]  # the runtime rounds the other way: the reference's own alternative
    m = compare(out, ref, rounding=mask)
    assert m["differing_labels"] == 1 and m["differing_labels_within_step"] == 0
    # a label the reference never gives is a disagreement
    out[1] = np.roll(ref[1], 1)
    assert compare(out, ref, rounding=mask)["differing_labels_within_step"] == 1


def labelled(ref: np.ndarray, correct: int, seed: int = 0) -> np.ndarray:
    """Labels that agree with ``ref``'s top-1 on the first ``correct`` samples and differ on the rest."""
    y = ref.argmax(1).copy()
    y[correct:] = (y[correct:] + 1 + np.random.default_rng(seed).integers(0, 9, len(y) - correct)) % 10
    return y


def test_a_reference_near_chance_fails_with_the_likely_causes_in_order():
    ref = grid_logits(100)
    cfg = resolve_gates(GateConfig(), None, 10)
    assert cfg.reference_accuracy_min == 0.325  # chance 0.1 plus a quarter of the way to 1
    near_chance = {g.gate: g for g in evaluate_gates(compare(ref, ref), reference_health(ref, truth=labelled(ref, 9)),
                                                     cfg)}["reference_accuracy_min"]
    assert not near_chance.passed and near_chance.value == 0.09
    detail = near_chance.detail
    assert "near chance (0.100 for 10 classes" in detail
    assert detail.index("mean/std") < detail.index("model.input.shape") < detail.index("model.weights")
    fine = {g.gate: g for g in evaluate_gates(compare(ref, ref), reference_health(ref, truth=labelled(ref, 90)),
                                              cfg)}["reference_accuracy_min"]
    assert fine.passed
    off = resolve_gates(GateConfig(reference_accuracy_min=None), None, 10)
    assert "reference_accuracy_min" not in {g.gate for g in evaluate_gates(
        compare(ref, ref), reference_health(ref, truth=labelled(ref, 9)), off)}
    # Without labels there is nothing to judge: no gate at all.
    assert "reference_accuracy_min" not in {g.gate for g in evaluate_gates(compare(ref, ref), reference_health(ref),
                                                                           cfg)}


def test_a_quantization_that_collapses_is_named_as_that_with_the_numbers():
    float_ref = grid_logits(100)
    y = labelled(float_ref, 95)  # the float model: 0.95
    ref = float_ref.copy()
    ref[:47] = np.roll(ref[:47], 1, axis=1)  # the PT2E model loses 47 labels: 0.53
    health = {**reference_health(ref, STEP, y), "float": reference_health(float_ref, truth=y),
              "agreement_with_float": 0.53}
    gates = {g.gate: g for g in evaluate_gates(compare(ref, ref, y, step=STEP), health, quantized_gates(),
                                               compare(ref, float_ref, y))}
    collapse = gates["reference_accuracy_min"]
    assert not collapse.passed
    assert "quantization collapsed the model: accuracy 0.950 (float) -> 0.480 (PT2E model)" in collapse.detail
    assert "untrained" not in collapse.detail  # the float model is fine: no talk of zero-initialised heads
    # Constant PT2E logits behind a healthy float model: a collapse too, not "untrained weights".
    flat = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (len(ref), 1))
    smooth = float_ref + np.random.default_rng(1).normal(0, 1e-3, float_ref.shape).astype(np.float32)  # no ties
    health = {**reference_health(flat, STEP), "float": reference_health(smooth)}
    why = {g.gate: g for g in evaluate_gates(compare(flat, flat, step=STEP), health,
                                             quantized_gates())}["reference_not_degenerate"].detail
    assert "quantization collapsed it" in why and "zero-initialised" not in why


def test_a_degenerate_reference_is_explained_once():
    zeros = np.zeros((20, 10), dtype=np.float32)
    gates = evaluate_gates(compare(zeros, zeros), reference_health(zeros), GateConfig())
    assert sum("zero-initialised" in g.detail for g in gates) == 1
