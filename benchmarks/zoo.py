"""Conformance benchmark: every torchvision classification family through the normal runner, at fp32 and W8A8.

    python benchmarks/zoo.py [--models resnet18 timm:NAME ...] [--precisions fp32 w8a8 w8a8-ac]
                             [--out FILE.json] [--runs-dir DIR] [--cache DIR] [--force]

Protocol (the coverage issue): each model is first trained briefly on digits at a small resolution the
architecture accepts (64x64 unless it needs more), so its reference is real, not a random network's constant
logits; the trained weights are cached and every precision starts from them. Then, through ``edgeship.run``:
``fp32`` (train + export), ``w8a8`` (PTQ, min-max, 256 calibration digits) and ``w8a8-ac`` (the same with
``quantize.accuracy_control``, measured on 400 control digits that no run trains, calibrates or validates on).
Per model x precision x runtime row: status, agreement vs PyTorch (PT2E when quantized) and vs the float model,
what actually ran, conversion route, export seconds and a failure class.

The benchmark resumes: a (model, precision) already in ``--out`` is skipped unless ``--force``; results are
written after every run, so an interrupted zoo (hours on 2 cores) goes on where it stopped. Each model's entry
records the ``ZooModel`` it was trained with; when that changes (more epochs, another learning rate) the model's
earlier results and cached weights no longer count, and only that model runs again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, md_table, run_recipe

from edgeship.core.environment import host_info, library_versions
from edgeship.core.io import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
FACTORIES = HERE / "_zoo_models.py"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CONTROL_ROWS = 400  # kept from training too, in every precision: accuracy control measures on unseen rows
PROTOCOL = 2  # bump when the recipe below changes: earlier results then no longer count as done


@dataclass(frozen=True)
class ZooModel:
    """How one zoo entry is built and trained: the model source, input size and training epochs."""

    source: str
    size: int = 64
    epochs: int = 3
    lr: float = 0.005

    def key(self) -> str:
        """A short content hash of the training protocol: the name of its cached weights."""
        return hashlib.sha256(json.dumps([PROTOCOL, asdict(self)], sort_keys=True).encode()).hexdigest()[:10]


COMPACT = 10  # epochs for the compact models: at 3 their references sit at 0.79-0.93 with margins W8A8 noise flips


def _factory(name: str) -> str:
    return f"{FACTORIES}:{name}"


MODELS: dict[str, ZooModel] = {
    "alexnet": ZooModel("torchvision:alexnet", lr=0.0005),  # no BatchNorm: Adam at 5e-3 diverges
    "vgg11_bn": ZooModel("torchvision:vgg11_bn", lr=0.001),
    "resnet18": ZooModel("torchvision:resnet18"),
    "resnet50": ZooModel("torchvision:resnet50"),
    "resnext50_32x4d": ZooModel("torchvision:resnext50_32x4d"),
    "wide_resnet50_2": ZooModel("torchvision:wide_resnet50_2"),
    "densenet121": ZooModel("torchvision:densenet121"),
    "googlenet": ZooModel(_factory("googlenet")),  # without the auxiliary heads
    "inception_v3": ZooModel(_factory("inception_v3"), size=96),  # needs >= 75x75
    "squeezenet1_0": ZooModel("torchvision:squeezenet1_0", lr=0.001),
    "shufflenet_v2_x0_5": ZooModel("torchvision:shufflenet_v2_x0_5", epochs=COMPACT),
    "mnasnet0_5": ZooModel("torchvision:mnasnet0_5", epochs=COMPACT),
    "mobilenet_v2": ZooModel("torchvision:mobilenet_v2", epochs=COMPACT),
    "mobilenet_v3_small": ZooModel("torchvision:mobilenet_v3_small", epochs=COMPACT),
    "efficientnet_b0": ZooModel("torchvision:efficientnet_b0", epochs=COMPACT),
    "efficientnet_v2_s": ZooModel("torchvision:efficientnet_v2_s"),
    "regnet_x_400mf": ZooModel("torchvision:regnet_x_400mf", epochs=COMPACT),
    "regnet_y_400mf": ZooModel("torchvision:regnet_y_400mf", epochs=COMPACT),
    "convnext_tiny": ZooModel("torchvision:convnext_tiny", lr=0.001),
    "vit_b_32": ZooModel(_factory("vit_b_32_64"), lr=0.0005),  # image_size=64: 4 patches
    "swin_t": ZooModel("torchvision:swin_t", lr=0.001),
    "swin_v2_t": ZooModel("torchvision:swin_v2_t", lr=0.001),
    "maxvit_t": ZooModel(_factory("maxvit_t_64"), epochs=2, lr=0.001),  # partition 2 at 64x64 (see the factory)
}
PRECISIONS = ("fp32", "w8a8", "w8a8-ac")
W8A8 = {"type": "quantize", "mode": "ptq", "weight_bits": 8, "act_bits": 8,
        "calibration": {"estimator": "minmax", "samples": 256}}
ACCURACY_CONTROL = {"max_drop": 0.005, "max_fallback_layers": 8}


def zoo_model(name: str) -> ZooModel:
    """A listed model, or ``timm:NAME`` at 64x64."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith("timm:"):
        return ZooModel(name)
    raise SystemExit(f"unknown zoo model {name!r}: one of {', '.join(MODELS)} or timm:NAME")


def recipe(name: str, m: ZooModel, precision: str, weights: Path | None) -> dict[str, Any]:
    """The run of one model at one precision; fp32 trains (weights None) or reloads the cached weights."""
    model: dict[str, Any] = {"source": m.source,
                             "input": {"shape": [1, 3, m.size, m.size], **IMAGENET, "num_classes": 10}}
    stages: list[dict[str, Any]] = []
    if weights is None:
        stages.append({"type": "train", "epochs": m.epochs, "lr": m.lr, "precise_bn": True})
    else:
        model["weights"] = str(weights)
    if precision == "w8a8":
        stages.append(W8A8)
    elif precision == "w8a8-ac":
        stages.append({**W8A8, "accuracy_control": ACCURACY_CONTROL})
    return {"name": f"zoo-{name.replace(':', '-')}-{precision}", "seed": 0, "model": model,
            "data": {"calibration": {"source": "digits", "samples": 256},
                     "validation": {"source": "digits", "samples": 360}, "control_samples": CONTROL_ROWS},
            "stages": stages, "latency": {"enabled": False}}


def failure_class(report: dict[str, Any], row: dict[str, Any]) -> str | None:
    """Why a gated row did not pass, in one phrase (None when it passed or is not gated)."""
    if not row.get("gated") or row.get("status") == "pass":
        return None
    failed = [g for g in row.get("gates", []) if not g["passed"]]
    names = {g["gate"] for g in failed}
    if "reference_not_degenerate" in names:
        return "degenerate reference"
    label = row["runtime"]
    finding = next((f for f in (report.get("cross_runtime") or {}).get("findings", [])
                    if label == f.get("execution") or label in f.get("executions", [])), None)
    table = ((report.get("divergence") or {}).get("runtimes") or {}).get(label) or {}
    first, steep = table.get("first_divergent"), table.get("steepest_drop")
    parts = [", ".join(sorted(names)) or str(row.get("status"))]
    if finding:
        parts.append(f"{finding['kind']}: {finding['detail']}")
    if first:
        floor = f"; reference floor {first['floor_db']} dB" if "floor_db" in first else ""
        parts.append(f"first divergent layer {first['layer']} ({first['op']}, {first['sqnr_db']} dB{floor})")
    if first and steep and steep["node"] != first["node"]:
        parts.append(f"steepest drop at {steep['layer']} ({steep['op']}, -{steep['drop_db']} dB)")
    return "; ".join(parts)


def summarize(report: dict[str, Any], wall: float) -> dict[str, Any]:
    """The figures the zoo keeps from one run's report."""
    rows = {}
    for r in report.get("results", []):
        m, vf = r.get("metrics", {}), r.get("metrics_vs_float", {})
        rows[r["runtime"]] = {
            "status": r.get("status"), "gated": r.get("gated"), "format": r.get("format"),
            "precision": r.get("precision"), "agreement": m.get("top1_agreement"),
            "agreement_within_step": m.get("top1_agreement_within_step"),
            "agreement_vs_float": vf.get("top1_agreement"), "rel_max_err": m.get("rel_max_err"),
            "cosine": m.get("cosine"), "accuracy": m.get("accuracy"), "failure": failure_class(report, r)}
    exports = {fmt: {k: e.get(k) for k in ("status", "route", "seconds", "op", "modules", "hint") if k in e}
               for fmt, e in report.get("exports", {}).items()}
    stages = report.get("stages", [])
    train = next((s["metrics"] for s in stages if s["type"] == "train"), {})
    quant = next((s["metrics"] for s in stages if s["type"] == "quantize"), {})
    return {"status": report.get("status"), "wall_seconds": round(wall, 1), "exports": exports, "rows": rows,
            "reference_accuracy": (report.get("reference") or {}).get("accuracy"),
            "reference_health": (report.get("reference") or {}).get("health"),
            "train_val_accuracy": train.get("val_accuracy"),
            "pt2e_agreement_with_float": quant.get("pt2e_agreement_with_float"),
            "fallback": quant.get("accuracy_control"),
            "failed_gates": len(report.get("failed_gates", [])),
            "cross_runtime": (report.get("cross_runtime") or {}).get("findings", [])}


def run_one(name: str, m: ZooModel, precision: str, cache: Path, runs_dir: Path | None) -> dict[str, Any]:
    """Run ``name`` at ``precision`` (training it first when its weights are not cached)."""
    weights = cache / f"{name.replace(':', '-')}-{m.key()}.safetensors"
    if not weights.exists() and precision != "fp32":
        trained = run_one(name, m, "fp32", cache, runs_dir)  # fp32 trains and caches; its figures are kept apart
        if not weights.exists():
            return {**trained, "status": "error",
                    "error": f"the fp32 run that trains the weights failed: {trained.get('error', trained['status'])}"}
    trains = not weights.exists()
    spec = recipe(name, m, precision, None if trains else weights)
    with tempfile.TemporaryDirectory() as tmp:
        out = (runs_dir or Path(tmp)) / spec["name"]
        if out.exists():
            shutil.rmtree(out)
        start = time.perf_counter()
        try:
            report = run_recipe(spec, out)
        except Exception as e:  # a run that raises is a result of the zoo, not the end of it
            return {"status": "error", "error": f"{type(e).__name__}: {str(e)[:500]}",
                    "wall_seconds": round(time.perf_counter() - start, 1)}
        summary = summarize(report, time.perf_counter() - start)
        if trains:
            cache.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "stages" / "01-train" / "model.safetensors", weights)
    return summary


def cell(p: dict[str, Any] | None, runtime: str) -> str:
    """One markdown cell: status and agreement (vs float in brackets when quantized)."""
    if p is None:
        return ""
    if p.get("status") == "error":
        return "error"
    r = p["rows"].get(runtime)
    if r is None:
        fmt = {"onnxruntime": "onnx", "litert": "tflite", "openvino": "openvino"}.get(runtime)
        e = p["exports"].get(fmt, {})
        return f"export {e.get('status', '?')}" + (f" at {e['op']}" if e.get("op") else "")
    gated = r.get("agreement_within_step")  # the figure the gate judged: labels tied within one step agree
    gated = r["agreement"] if gated is None else gated
    agree = "" if gated is None else f" {gated:.3f}"
    vf = "" if r["agreement_vs_float"] is None else f" ({r['agreement_vs_float']:.3f})"
    return f"{r['status']}{agree}{vf}"


GATED = ("onnxruntime", "litert", "openvino")


def markdown(payload: dict[str, Any]) -> str:
    """Per model x precision: each gated runtime's status and agreement; then the failures by class."""
    rows, failures = [], []
    for name, entry in payload["models"].items():
        for precision in PRECISIONS:
            p = entry.get(precision)
            if p is None:
                continue
            rows.append([name, precision, entry.get("config", {}).get("epochs", ""), *(cell(p, rt) for rt in GATED),
                         "" if p.get("reference_accuracy") is None else f"{p['reference_accuracy']:.3f}",
                         p.get("wall_seconds", "")])
            for rt, r in p.get("rows", {}).items():
                if r.get("failure"):
                    failures.append([name, precision, rt, r["failure"]])
            failures += [[name, precision, fmt, f"export failed at {e.get('op')} ({e.get('hint', '')})"]
                         for fmt, e in p.get("exports", {}).items() if e.get("status") == "failed"]
            if p.get("status") == "error":
                failures.append([name, precision, "-", p["error"]])
    totals = []
    for precision in PRECISIONS:
        done = [e[precision] for e in payload["models"].values() if precision in e]
        passed = sum(1 for p in done if p.get("status") == "pass")
        if done:
            totals.append(f"- {precision}: {passed} of {len(done)} models pass on every gated runtime")
    host = payload["host"]
    hosts = sorted({e[p]["host"] for e in payload["models"].values() for p in PRECISIONS if e.get(p, {}).get("host")})
    return "\n\n".join([
        "# Model zoo conformance (benchmarks/zoo.py)",
        f"Host of the last run: {host['cpu']} ({host['cpu_flags']}), {host['logical_cores']} cores; rows measured "
        f"on: {'; '.join(hosts)}. Each model trained briefly on "
        "digits, 360 validation digits; cells: status, agreement with PyTorch (PT2E when quantized; as the gate "
        "judges it: labels within one output step of the reference's top-1, or the reference's own under "
        "rounding-sized input noise, agree) and, in brackets, with the float model.",
        "\n".join(totals),
        md_table(["model", "precision", "epochs", *GATED, "reference accuracy", "seconds"], rows),
        "## Failures", md_table(["model", "precision", "runtime", "class"], failures) if failures else "none"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="torchvision names or timm:NAME")
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--out", type=Path, default=RESULTS / "zoo.json")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep each run directory (artifacts) here")
    ap.add_argument("--cache", type=Path, default=HERE / ".zoo-cache", help="trained weights, one file per model")
    ap.add_argument("--force", action="store_true", help="re-run (model, precision) pairs already in --out")
    args = ap.parse_args()
    models = {name: zoo_model(name) for name in args.models}
    payload: dict[str, Any] = {"protocol": PROTOCOL, "models": {}}
    if args.out.exists():
        previous = json.loads(args.out.read_text())
        if previous.get("protocol") == PROTOCOL:
            payload = previous
    payload.update({"host": host_info(), "versions": library_versions()})
    for name, m in models.items():
        entry = payload["models"].setdefault(name, {})
        if entry.get("config") != asdict(m):  # measured on weights trained another way: they no longer count
            entry.clear()
            entry["config"] = asdict(m)
        for precision in args.precisions:
            if precision in entry and not args.force:
                continue
            print(f"zoo: {name} {precision} ...", flush=True)
            entry[precision] = {**run_one(name, m, precision, args.cache, args.runs_dir), "host": host_info()["cpu"]}
            print(f"zoo: {name} {precision}: {entry[precision]['status']} in {entry[precision]['wall_seconds']} s "
                  + " ".join(f"{rt}={cell(entry[precision], rt)}" for rt in GATED), flush=True)
            atomic_write_json(args.out, payload)
            atomic_write_text(args.out.with_suffix(".md"), markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
