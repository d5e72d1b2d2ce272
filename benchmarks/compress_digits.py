"""Prune + distill benchmark: the figures of the prune/distill issue, measured with edgeship's runner.

    python benchmarks/compress_digits.py [--part student lp zoo resnet18] [--seeds 0 1 2]

student:  digits CNN teacher -> Taylor prune to <= 30% MACs -> KD -> ONNX/TFLite/OpenVINO; accuracy and agreement
          with the teacher (PyTorch student) and each artifact's agreement with the student.
lp:       an aggressive budget where plain CE fine-tuning leaves >= 10 mismatches with the teacher; CE vs the
          label-preservation loss (auto-tuned α, β, T), same epochs, mismatches and mismatches-when-the-teacher-
          is-correct on the validation split, mean ± std over seeds.
zoo:      torchvision resnet18, mobilenet_v2, efficientnet_b0, convnext_tiny, vit_b_16 (random init, 10 classes,
          224) pruned to 50% MACs (L1; vit_b_16: a quarter of its heads first), exported to all three formats,
          validated against the pruned model.
resnet18: the resnet18_prune example (Taylor, 50% MACs): each runtime's p50 pruned vs unpruned (same runtime).
A partial run keeps the other parts' last figures. Writes results/compress_digits.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _common import RESULTS, md_table, run_recipe, write_results

from edgeship.core.environment import host_info, library_versions

ROOT = Path(__file__).resolve().parent.parent
DIGITS_MODEL = {"source": "edgeship.zoo:digits_cnn",
                "input": {"shape": [1, 1, 16, 16], "mean": [0.5], "std": [0.5], "num_classes": 10}}
TEACHER = {"type": "train", "epochs": 15, "lr": 0.005}
# At 25% MACs plain CE left 8.7 mismatches (fewer than the 10 the comparison needs); at target 0.1, 13.7.
# The student lands at 11.2%: round_to 8 keeps 8 channels per layer, as far as this CNN goes (a report note).
LP_BUDGET = {"type": "prune", "criterion": "taylor", "target_macs": 0.1}
LP_TRAINER = {"epochs": 40, "lr": 0.01}
LP_TUNE = {"trials": 6, "epochs": 20}  # half-length trials; the chosen (α, β, T) then trains on every row
LP_VALIDATION = 500  # more held-out digits than the default 360: mismatch counts large enough to compare


def digits_recipe(seed: int, stages: list[dict[str, Any]], formats: list[str], validate: bool = True,
                  validation: int = 360) -> dict[str, Any]:
    return {"name": "bench-compress", "seed": seed, "model": DIGITS_MODEL,
            "data": {"calibration": {"source": "digits", "samples": 256},
                     "validation": {"source": "digits", "samples": validation}},
            "stages": [TEACHER, *stages], "export": {"formats": formats},
            "validate": {"enabled": validate}, "latency": {"enabled": False}}


def run(recipe: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return run_recipe(recipe, Path(tmp) / "run")


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def student(seeds: list[int]) -> dict[str, Any]:
    rows = []
    for seed in seeds:
        example = yaml.safe_load((ROOT / "examples" / "digits_prune_distill.yaml").read_text())
        example["seed"] = seed
        example["latency"] = {"enabled": False}
        report = run(example)
        d = report["stages"][2]["metrics"]
        final = d["final_vs_teacher"]
        rows.append({"seed": seed, "macs_ratio": d["student_macs"] / d["teacher_macs"],
                     "teacher_accuracy": final["reference_accuracy"], "student_accuracy": final["accuracy"],
                     "agreement_with_teacher": final["agreement"],
                     "artifact_agreement_with_student": {r["runtime"]: r["metrics"]["top1_agreement"]
                                                         for r in report["results"] if r["gated"]}})
    return {"runs": rows,
            "accuracy_drop_points": mean_std([100 * (r["teacher_accuracy"] - r["student_accuracy"]) for r in rows]),
            "agreement": mean_std([r["agreement_with_teacher"] for r in rows])}


def label_preservation(seeds: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in ("ce", "label_preservation"):
        runs = []
        for seed in seeds:
            distill = {"type": "distill", "method": method, "trainer": LP_TRAINER}
            if method == "label_preservation":
                distill["tune"] = LP_TUNE
            stages = [LP_BUDGET, distill]
            report = run(digits_recipe(seed, stages, ["onnx"], validate=False, validation=LP_VALIDATION))
            d = report["stages"][2]["metrics"]
            final = d["final_vs_teacher"]
            runs.append({"seed": seed, "mismatches": final["mismatches"],
                         "mismatches_when_teacher_correct": final["mismatches_when_reference_correct"],
                         "accuracy": final["accuracy"], "teacher_accuracy": final["reference_accuracy"],
                         "macs_ratio": d["student_macs"] / d["teacher_macs"],
                         "tuned": (d["tuning"] or {}).get("chosen")})
        out[method] = {"runs": runs, "mismatches": mean_std([r["mismatches"] for r in runs]),
                       "mismatches_when_teacher_correct": mean_std([r["mismatches_when_teacher_correct"]
                                                                    for r in runs])}
    ce, lp = out["ce"], out["label_preservation"]
    out["ratio_mismatches"] = ce["mismatches"]["mean"] / max(lp["mismatches"]["mean"], 1e-9)
    out["ratio_mismatches_when_teacher_correct"] = (ce["mismatches_when_teacher_correct"]["mean"]
                                                    / max(lp["mismatches_when_teacher_correct"]["mean"], 1e-9))
    return out


ZOO = ("resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "vit_b_16")


def zoo() -> dict[str, Any]:
    out = {}
    for name in ZOO:
        prune: dict[str, Any] = {"type": "prune", "criterion": "l1", "target_macs": 0.5}
        source = f"torchvision:{name}"
        if name == "vit_b_16":  # whole heads first (a quarter), then the width budget
            prune["heads_ratio"] = 0.25
            source = "_zoo_models:vit_b_16"  # random, not zero, classifier: a non-degenerate reference
        recipe = {"name": f"bench-zoo-{name}", "seed": 0,
                  "model": {"source": source,
                            "input": {"shape": [1, 3, 224, 224], "mean": [0.485, 0.456, 0.406],
                                      "std": [0.229, 0.224, 0.225], "num_classes": 10}},
                  "data": {"calibration": {"source": "digits", "samples": 16},
                           "validation": {"source": "digits", "samples": 48}},
                  "stages": [prune], "latency": {"enabled": False}}
        report = run(recipe)
        p = report["stages"][0]["metrics"]
        gated = [r for r in report["results"] if r["gated"]]
        out[name] = {"macs_ratio": p["macs_ratio"], "params_ratio": p["params_ratio"],
                     "attention_heads": p.get("attention_heads"),
                     "agreement": {r["runtime"]: r["metrics"]["top1_agreement"] for r in gated},
                     "rel_max_err": {r["runtime"]: r["metrics"]["rel_max_err"] for r in gated},
                     "status": report["status"]}
        print(name, json.dumps(out[name]), flush=True)
    return out


def resnet18() -> dict[str, Any]:
    example = yaml.safe_load((ROOT / "examples" / "resnet18_prune.yaml").read_text())
    example["latency"] = {"threads": 2, "warmup": 10, "runs": 100}
    report = run(example)
    p = report["stages"][0]["metrics"]
    return {"macs_ratio": p["macs_ratio"], "params_ratio": p["params_ratio"],
            "runtimes": {r["runtime"]: {"pruned_p50_ms": r["latency"]["p50"],
                                       "unpruned_p50_ms": r["baseline_latency"]["p50"],
                                       "speedup": r["speedup_vs_baseline"],
                                       "agreement": r["metrics"]["top1_agreement"]}
                         for r in report["results"] if "speedup_vs_baseline" in r}}


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Prune + distill benchmark", ""]
    if "student" in results:
        s = results["student"]
        lines += ["## Student at <= 30% of the teacher's MACs (digits, KD)", "", md_table(
            ["seed", "MACs", "teacher acc", "student acc", "agreement", "artifacts vs student"],
            [[r["seed"], f"{r['macs_ratio']:.1%}", f"{r['teacher_accuracy']:.4f}", f"{r['student_accuracy']:.4f}",
              f"{r['agreement_with_teacher']:.4f}",
              ", ".join(f"{k} {v:.4f}" for k, v in r["artifact_agreement_with_student"].items())]
             for r in s["runs"]]), "",
            f"accuracy drop {s['accuracy_drop_points']['mean']:.2f} ± {s['accuracy_drop_points']['std']:.2f} points "
            f"(target <= 1.0); agreement {s['agreement']['mean']:.4f} ± {s['agreement']['std']:.4f} "
            "(target >= 0.98)", ""]
    if "lp" in results:
        lp = results["lp"]
        rows = [[m, ", ".join(str(r["mismatches"]) for r in lp[m]["runs"]),
                 f"{lp[m]['mismatches']['mean']:.2f} ± {lp[m]['mismatches']['std']:.2f}",
                 f"{lp[m]['mismatches_when_teacher_correct']['mean']:.2f} ± "
                 f"{lp[m]['mismatches_when_teacher_correct']['std']:.2f}",
                 f"{statistics.mean(r['accuracy'] for r in lp[m]['runs']):.4f}"] for m in ("ce", "label_preservation")]
        lines += [f"## Label preservation at an aggressive budget (validation: {LP_VALIDATION} digits)", "",
                  f"Student MACs: {lp['ce']['runs'][0]['macs_ratio']:.1%} of the teacher's; same epochs for both.",
                  "", md_table(["method", "mismatches per seed", "mismatches", "mismatches when teacher correct",
                                "accuracy"], rows), "",
                  f"CE / label-preservation: {lp['ratio_mismatches']:.2f}x fewer mismatches (target >= 2x), "
                  f"{lp['ratio_mismatches_when_teacher_correct']:.2f}x fewer where the teacher is correct.",
                  "Tuned (α, β, T) per seed: " + "; ".join(
                      f"{r['tuned']['alpha']}, {r['tuned']['beta']}, {r['tuned']['temperature']}"
                      for r in lp["label_preservation"]["runs"]), ""]
    if "zoo" in results:
        lines += ["## torchvision models pruned to 50% MACs, exported, validated against the pruned model", "",
                  md_table(["model", "MACs", "params", "heads", "agreement (onnxruntime, litert, openvino)",
                            "status"],
                           [[n, f"{z['macs_ratio']:.1%}", f"{z['params_ratio']:.1%}",
                             "{before} -> {after}".format(**z["attention_heads"]) if z.get("attention_heads") else "",
                             ", ".join(f"{v:.4f}" for v in z["agreement"].values()), z["status"]]
                            for n, z in results["zoo"].items()]), ""]
    if "resnet18" in results:
        r = results["resnet18"]
        lines += [f"## resnet18 pruned to {r['macs_ratio']:.1%} MACs (Taylor): measured latency, same runtime", "",
                  md_table(["runtime", "pruned p50 ms", "unpruned p50 ms", "speed-up", "agreement"],
                           [[k, v["pruned_p50_ms"], v["unpruned_p50_ms"], f"{v['speedup']:.2f}x", v["agreement"]]
                            for k, v in r["runtimes"].items()]), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["student", "lp", "zoo", "resnet18"],
                    choices=["student", "lp", "zoo", "resnet18"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    previous = RESULTS / "compress_digits.json"
    results: dict[str, Any] = json.loads(previous.read_text())["results"] if previous.is_file() else {}
    parts = {"student": lambda: student(args.seeds), "lp": lambda: label_preservation(args.seeds), "zoo": zoo,
             "resnet18": resnet18}
    for part in args.part:
        results[part] = parts[part]()
        payload = {"host": host_info(), "versions": library_versions(), "results": results}
        jp, mp = write_results("compress_digits", payload, markdown(results))
    print(mp.read_text())
    print(f"wrote {jp} and {mp}")


if __name__ == "__main__":
    main()
