"""fp32 export benchmark: per model and format, export seconds, size, agreement, p50 latency, ratio to PyTorch.

    python benchmarks/export_fp32.py [--models resnet18 mobilenet_v3_small] [--repeats 3] [--threads 2]

Each repeat is a full `edgeship run` (export, validation on the digits split resized to 224, profiling);
figures are medians over repeats (latency: median of each repeat's p50). Writes results/export_fp32.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import md_table, median, run_recipe, write_results

from edgeship.core.environment import host_info, library_versions


def recipe(model: str, threads: int, runs: int) -> dict:
    return {
        "name": f"bench-{model}",
        "model": {"source": f"torchvision:{model}",
                  "input": {"shape": [1, 3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                            "num_classes": 10}},
        "data": {"calibration": {"source": "digits", "samples": 32},
                 "validation": {"source": "digits", "samples": 200}},
        "latency": {"threads": threads, "warmup": 10, "runs": runs},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v3_small"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()

    rows, payload = [], {"host": host_info(), "versions": library_versions(), "threads": args.threads,
                         "repeats": args.repeats, "models": {}}
    for model in args.models:
        reports = []
        for i in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                reports.append(run_recipe(recipe(model, args.threads, args.runs), Path(tmp) / "run"))
            print(f"{model}: repeat {i + 1}/{args.repeats} done ({reports[-1]['wall_seconds']} s)", flush=True)
        eager = median([r["pytorch_latency"]["p50"] for r in reports])
        entry = {"pytorch_eager_p50_ms": eager, "formats": {}}
        for fmt, target in (("onnx", "onnxruntime"), ("tflite", "litert"), ("openvino", "openvino"),
                            ("openvino", "openvino@default")):
            res = [next(t for t in r["results"] if t["runtime"] == target) for r in reports]
            p50 = median([t["latency"]["p50"] for t in res])
            f = {
                "runtime": target,
                "precision": res[0]["precision"],
                "export_seconds": median([r["artifacts"][fmt]["export_seconds"] for r in reports]),
                "artifact_mb": reports[0]["artifacts"][fmt]["size_bytes"] / 1e6,
                "top1_agreement": min(t["metrics"]["top1_agreement"] for t in res),
                "rel_max_err": max(t["metrics"]["rel_max_err"] for t in res),
                "p50_ms": p50,
                "p50_ms_per_repeat": [t["latency"]["p50"] for t in res],
                "speedup_vs_pytorch": eager / p50,
                "status": res[0]["status"],
            }
            entry["formats"][target] = f
            rows.append([model, fmt, target, f["precision"], f"{f['export_seconds']:.1f}", f"{f['artifact_mb']:.2f}",
                         f"{f['top1_agreement']:.4f}", f"{f['rel_max_err']:.1e}", f"{p50:.2f}", f"{eager:.2f}",
                         f"{f['speedup_vs_pytorch']:.2f}x"])
        entry["reference_single_class"] = reports[0]["reference"]["health"]["single_class"]
        payload["models"][model] = entry

    headers = ["model", "format", "runtime", "precision", "export s", "MB", "top-1 agree", "rel max err",
               "p50 ms", "PyTorch p50 ms", "speed-up vs PyTorch"]
    table = md_table(headers, rows)
    md = (f"# fp32 export benchmark\n\n{payload['host']['cpu']}, {args.threads} threads, batch 1, 224x224, "
          f"median of {args.repeats} runs (latency: median of per-run p50 over {args.runs} timed calls).\n"
          f"Agreement: worst over repeats, on 200 real digits resized to 224.\n\n{table}\n")
    print(md)
    jp, mp = write_results("export_fp32", payload, md)
    print(f"wrote {jp} and {mp}")


if __name__ == "__main__":
    main()
