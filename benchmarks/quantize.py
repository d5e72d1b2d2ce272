"""Quantization benchmark: the figures of the quantize issue, measured on the exported artifacts.

    python benchmarks/quantize.py [--part digits resnet18] [--seeds 0 1 2] [--repeats 3]

digits: a small CNN teacher trained on digits; plain PTQ (min-max, every layer at b bits, as raw PT2E does)
versus edgeship QAT (LSQ + KD from the float model, first conv/classifier at 8 bits) at W4A8, W3A8, W2A8.
Agreement is measured on the exported TFLite artifact, against the float model and against the PT2E model.

resnet18 (224, batch 1, 2 threads): W8A8 PTQ on all three runtimes; agreement with the PT2E reference, int8 vs
fp32 latency on each runtime (OpenVINO both pinned f32 and default precision), int8 TFLite vs PyTorch eager;
ONNX file size at W8 and W4 against the fp32 file (parts: digits, resnet18, onnx_w4; a partial run keeps the
other parts' last figures). Writes results/quantize.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import RESULTS, md_table, median, run_recipe, write_results

from edgeship.core.environment import host_info, library_versions

DIGITS_MODEL = {"source": "edgeship.zoo:digits_cnn",
                "input": {"shape": [1, 1, 16, 16], "mean": [0.5], "std": [0.5], "num_classes": 10}}
TEACHER = {"type": "train", "epochs": 15, "lr": 0.005}
QAT = {"epochs": 20, "lr": 0.0002, "label_weight": 0.5}  # KD from the float model + labels (digits has them)


def digits_recipe(seed: int, quantize: dict[str, Any]) -> dict[str, Any]:
    return {"name": "bench-digits", "seed": seed, "model": DIGITS_MODEL,
            "data": {"calibration": {"source": "digits", "samples": 256},
                     "validation": {"source": "digits", "samples": 360}},
            "stages": [TEACHER, {"type": "quantize", **quantize}],
            "export": {"formats": ["tflite"]}, "latency": {"enabled": False}}


def litert_row(report: dict[str, Any]) -> dict[str, Any]:
    t = next(r for r in report["results"] if r["runtime"] == "litert")
    return {"vs_float": t["metrics_vs_float"]["top1_agreement"], "vs_pt2e": t["metrics"]["top1_agreement"],
            "accuracy": t["metrics"].get("accuracy"), "teacher_accuracy": t["metrics_vs_float"].get("accuracy")}


def run(recipe: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return run_recipe(recipe, Path(tmp) / "run")


def digits(seeds: list[int]) -> tuple[dict[str, Any], list[list[Any]]]:
    out: dict[str, Any] = {}
    rows = []
    for bits in (4, 3, 2):
        ptq = litert_row(run(digits_recipe(0, {"mode": "ptq", "weight_bits": bits, "keep_first_last_8bit": False})))
        qat = [litert_row(run(digits_recipe(s, {"mode": "qat", "weight_bits": bits, "qat": QAT}))) for s in seeds]
        agree = [q["vs_float"] for q in qat]
        out[f"W{bits}A8"] = {"ptq": ptq, "qat": qat, "qat_vs_float_mean": statistics.mean(agree),
                             "qat_vs_float_std": statistics.pstdev(agree), "qat_vs_float_min": min(agree)}
        rows.append([f"W{bits}A8", f"{ptq['vs_float']:.4f}", f"{statistics.mean(agree):.4f} ± "
                     f"{statistics.pstdev(agree):.4f}", f"{min(agree):.4f}",
                     f"{min(q['vs_pt2e'] for q in qat):.4f}", f"{statistics.mean(q['accuracy'] for q in qat):.4f}"])
        print(f"digits W{bits}A8: PTQ {ptq['vs_float']:.4f}, QAT {agree}", flush=True)
    return out, rows


def resnet18_recipe(bits: int, profile: bool) -> dict[str, Any]:
    return {"name": f"bench-r18-w{bits}",
            "model": {"source": "torchvision:resnet18",
                      "input": {"shape": [1, 3, 224, 224], "mean": [0.485, 0.456, 0.406],
                                "std": [0.229, 0.224, 0.225], "num_classes": 10}},
            "data": {"calibration": {"source": "digits", "samples": 256},
                     "validation": {"source": "digits", "samples": 200}},
            "stages": [{"type": "quantize", "mode": "ptq", "weight_bits": bits, "act_bits": 8}],
            "export": {"formats": ["onnx", "tflite", "openvino"] if profile else ["onnx"]},
            "latency": {"enabled": profile, "threads": 2, "warmup": 10, "runs": 50}}


def resnet18(repeats: int) -> tuple[dict[str, Any], list[list[Any]], dict[str, Any]]:
    reports = []
    for i in range(repeats):
        reports.append(run(resnet18_recipe(8, True)))
        print(f"resnet18 W8A8 repeat {i + 1}/{repeats} ({reports[-1]['wall_seconds']} s)", flush=True)
    eager = median([r["pytorch_latency"]["p50"] for r in reports])
    out: dict[str, Any] = {"pytorch_eager_p50_ms": eager, "targets": {}}
    rows = []
    for target in ("onnxruntime", "litert", "openvino", "openvino@default"):
        res = [next(t for t in r["results"] if t["runtime"] == target) for r in reports]
        int8, fp32 = median([t["latency"]["p50"] for t in res]), median([t["fp32_latency"]["p50"] for t in res])
        entry = {"agreement_vs_pt2e": min(t["metrics"]["top1_agreement"] for t in res),
                 "agreement_vs_float": min(t["metrics_vs_float"]["top1_agreement"] for t in res),
                 "precision": res[0]["precision"], "fp32_precision": res[0]["fp32_precision"],
                 "int8_p50_ms": int8, "fp32_p50_ms": fp32, "speedup_vs_fp32": fp32 / int8,
                 "speedup_vs_pytorch": eager / int8, "int8_p50_per_repeat": [t["latency"]["p50"] for t in res],
                 "fp32_p50_per_repeat": [t["fp32_latency"]["p50"] for t in res]}
        out["targets"][target] = entry
        rows.append([target, entry["precision"], entry["fp32_precision"], f"{entry['agreement_vs_pt2e']:.4f}",
                     f"{entry['agreement_vs_float']:.4f}", f"{int8:.2f}", f"{fp32:.2f}",
                     f"{entry['speedup_vs_fp32']:.2f}x", f"{entry['speedup_vs_pytorch']:.2f}x"])
    sizes = {"fp32_onnx_bytes": reports[0]["quantization"]["sizes"]["onnx"]["fp32_bytes"],
             "w8_onnx_bytes": reports[0]["quantization"]["sizes"]["onnx"]["bytes"]}
    sizes["w8_ratio"] = sizes["w8_onnx_bytes"] / sizes["fp32_onnx_bytes"]
    return out, rows, sizes


def render(payload: dict[str, Any]) -> str:
    """Markdown for every part present in ``payload``."""
    md = [f"# Quantization benchmark\n\n{payload['host']['cpu']}, 2 threads.\n"]
    if "digits" in payload:
        md.append(f"## digits: top-1 agreement of the exported TFLite with the float teacher\n\n"
                  f"PTQ: plain min-max, every layer at the given bits. QAT: LSQ + KD (+0.5 CE on labels), first "
                  f"conv/classifier 8-bit, {QAT}, seeds {payload['digits_seeds']} (mean ± std, min).\n\n"
                  + md_table(["bits", "PTQ vs float", "QAT vs float", "QAT min", "QAT TFLite vs PT2E (min)",
                              "QAT accuracy"], payload["digits_rows"]) + "\n")
    if "resnet18" in payload:
        sizes = payload["onnx_sizes"]
        md.append(f"## resnet18 W8A8 PTQ (224, batch 1, 2 threads, median of {payload['resnet18_repeats']} runs)"
                  f"\n\nPyTorch eager fp32 p50: {payload['resnet18']['pytorch_eager_p50_ms']:.2f} ms\n\n"
                  + md_table(["runtime", "int8 precision", "fp32 precision", "agree vs PT2E", "agree vs float",
                              "int8 p50 ms", "fp32 p50 ms", "int8 vs fp32", "int8 vs PyTorch"],
                             payload["resnet18_rows"])
                  + f"\n\nONNX size: fp32 {sizes['fp32_onnx_bytes'] / 1e6:.2f} MB, "
                  f"W8 {sizes['w8_onnx_bytes'] / 1e6:.2f} MB ({sizes['w8_ratio']:.3f}x)"
                  + (f", W4 {sizes['w4_onnx_bytes'] / 1e6:.2f} MB ({sizes['w4_ratio']:.3f}x, agreement vs PT2E "
                     f"{sizes['w4_onnx_agreement_vs_pt2e']:.4f}, onnxruntime runs it "
                     f"{sizes.get('w4_onnx_precision', '?')})" if "w4_onnx_bytes" in sizes else "") + ".\n")
    return "\n".join(md)


def onnx_w4(sizes: dict[str, Any]) -> dict[str, Any]:
    """ONNX size of resnet18 at W4A8 (first conv and classifier at 8 bits) against the fp32 file."""
    w4 = run(resnet18_recipe(4, False))
    onnx_row = next(t for t in w4["results"] if t["runtime"] == "onnxruntime")
    sizes.update({"w4_onnx_bytes": w4["quantization"]["sizes"]["onnx"]["bytes"],
                  "w4_onnx_agreement_vs_pt2e": onnx_row["metrics"]["top1_agreement"],
                  "w4_onnx_precision": onnx_row["precision"],
                  "w4_weight_folding": w4["artifacts"]["onnx"]["details"]["weight_folding"]})
    sizes["w4_ratio"] = sizes["w4_onnx_bytes"] / sizes["fp32_onnx_bytes"]
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["digits", "resnet18", "onnx_w4"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    previous = RESULTS / "quantize.json"
    # A run of some parts keeps the other parts' last measured figures.
    payload: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    payload.update({"host": host_info(), "versions": library_versions()})
    if "digits" in args.part:
        payload["digits"], payload["digits_rows"] = digits(args.seeds)
        payload["digits_seeds"] = args.seeds
    if "resnet18" in args.part:
        payload["resnet18"], payload["resnet18_rows"], payload["onnx_sizes"] = resnet18(args.repeats)
        payload["resnet18_repeats"] = args.repeats
    if "onnx_w4" in args.part:
        payload["onnx_sizes"] = onnx_w4(payload["onnx_sizes"])
    text = render(payload)
    print(text)
    jp, mp = write_results("quantize", payload, text)
    print(f"wrote {jp} and {mp}")


if __name__ == "__main__":
    main()
