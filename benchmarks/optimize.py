"""Latency-target against MAC-target pruning at the same measured latency, on the exported artifacts.

For each seed a model is trained on digits. It is pruned (``--criterion``, L1 by default) to a grid of MAC
budgets and to a grid of latency targets on ``--runtime`` (with the latency lookup table measured there). Each
pruned model is fine-tuned for the same epochs, exported to the runtime's format and validated there: accuracy
on the digits labels, agreement with the unpruned float model. All pruned models and the unpruned one are then
timed together, interleaved, in fresh processes: each model's measured latency ratio. The MAC-target models'
accuracy is interpolated at each latency-target model's measured ratio (accuracy at equal measured latency),
and the table's predicted ratio is set beside the measured one for every latency-target model.

    python benchmarks/optimize.py --model resnet18 --runtime onnxruntime --seeds 0 1 2
    python benchmarks/optimize.py --model resnet18 --runtime litert --prediction-only   # the table's accuracy
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

from edgeship.recipe import LatencyConfig  # noqa: E402

# The recipe's default timing (warm-up, runs), which the table and the prune stage's own check use too: a ratio
# measured under another protocol moved by up to 10 % on OpenVINO.
PROTOCOL = LatencyConfig()

MODELS = {
    "resnet18": {"source": "torchvision:resnet18", "shape": [1, 3, 64, 64], "mean": [0.5] * 3, "std": [0.5] * 3,
                 "round_to": 8, "lr": 0.003},
    "digits_resnet": {"source": "edgeship.zoo:digits_resnet", "shape": [1, 1, 16, 16], "mean": [0.5], "std": [0.5],
                      "round_to": 4, "lr": 0.005},
}


def setup(name: str, seed: int) -> tuple[Any, torch.nn.Module, Any]:
    """The spec, a fresh model and the digits splits, built the way a recipe builds them."""
    import edgeship
    from edgeship.runner import Runner

    m = MODELS[name]
    recipe = edgeship.load_recipe({
        "name": f"bench-{name}", "seed": seed,
        "model": {"source": m["source"], "input": {"shape": m["shape"], "mean": m["mean"], "std": m["std"],
                                                   "num_classes": 10}},
        "data": {"calibration": {"source": "digits", "samples": 256}, "validation": {"source": "digits",
                                                                                     "samples": 360}}})
    runner = Runner(recipe, Path(tempfile.mkdtemp()), log=lambda _m: None)
    spec = runner.input_spec()
    torch.manual_seed(seed)
    return spec, runner.build(spec), runner.data(spec)


def train(model: torch.nn.Module, splits: Any, epochs: int, lr: float, seed: int) -> None:
    """Cross-entropy on the train split (edgeship's own trainer)."""
    from edgeship.training.supervised import train_supervised

    train_supervised(model, splits.train.x, splits.train.y, epochs=epochs, lr=lr, batch_size=64, weight_decay=1e-4,
                     seed=seed, log=lambda _m: None)
    model.eval()


def prune(model: torch.nn.Module, spec: Any, splits: Any, seed: int, budget: dict[str, Any],
          timing: Any) -> dict[str, Any]:
    """Run the prune stage on ``model`` in place; its metrics."""
    from edgeship.prune.config import PruneConfig
    from edgeship.stage import ModelState, StageContext
    from edgeship.stages.prune import PruneStage

    cfg = PruneConfig(type="prune", **budget)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(workdir=Path(tmp), splits=splits, seed=seed, log=lambda _m: None, timing=timing)
        result = PruneStage(cfg).run(ModelState(model=model, spec=spec), ctx)
    return result.metrics, result.state.model


def on_runtime(model: torch.nn.Module, spec: Any, runtime: str, x: np.ndarray, workdir: Path) -> np.ndarray:
    """Logits of the exported artifact, run on ``runtime`` in a fresh process."""
    from edgeship.exporters import FORMATS
    from edgeship.exporters.base import ExportContext
    from edgeship.prune.latency_table import TABLE_FORMAT
    from edgeship.targets import runtime_options
    from edgeship.targets.devices import LocalProcess

    fmt = FORMATS[TABLE_FORMAT[runtime]]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        artifact = fmt.exporter(model, spec, ExportContext(out_dir=Path(tmp), log_dir=Path(tmp)), fmt.options())
        job = {"runtime": runtime, "options": runtime_options(runtime)[0], "batch": 1, "threads": 2,
               "validate": True, "profile": False, "op_profile": False}
        _, out = LocalProcess().execute(job, artifact.files, x)
    return out


def timed(models: dict[str, torch.nn.Module], spec: Any, runtime: str, rounds: int,
          workdir: Path) -> dict[str, list[float]]:
    """Each model's p50 in ``rounds`` fresh processes, the rounds interleaving the models."""
    from edgeship.exporters import FORMATS
    from edgeship.exporters.base import ExportContext
    from edgeship.prune.latency_table import TABLE_FORMAT
    from edgeship.targets import runtime_options
    from edgeship.targets.devices import LocalProcess

    fmt = FORMATS[TABLE_FORMAT[runtime]]
    files = {}
    for name, model in models.items():
        folder = Path(tempfile.mkdtemp(dir=workdir))
        files[name] = fmt.exporter(model, spec, ExportContext(out_dir=folder, log_dir=folder), fmt.options()).files
    job = {"runtime": runtime, "options": runtime_options(runtime)[0], "batch": 1, "threads": 2,
           "warmup": PROTOCOL.warmup, "runs": PROTOCOL.runs, "validate": False, "profile": True, "op_profile": False}
    x = np.random.default_rng(0).random((1, *spec.shape[1:]), dtype=np.float32)
    out: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(rounds):
        for name in models:
            out[name].append(LocalProcess().execute(job, files[name], x)[0]["latency"]["p50"])
    return out


def interpolate(points: list[tuple[float, float]], at: float) -> tuple[float, bool]:
    """Linear interpolation of (ratio, accuracy) points at ``at``; False when ``at`` lies outside them."""
    pts = sorted(points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return float(np.interp(at, xs, ys)), xs[0] <= at <= xs[-1]


def one_seed(args: argparse.Namespace, seed: int, timing: Any, work: Path) -> dict[str, Any]:
    """Train, prune both ways, fine-tune, validate on the runtime and time everything interleaved."""
    m = MODELS[args.model]
    spec, base, splits = setup(args.model, seed)
    started = time.perf_counter()
    train(base, splits, args.epochs, m["lr"], seed)
    val = splits.validation
    with torch.no_grad():
        float_labels = base(torch.from_numpy(val.x)).argmax(1).numpy()
    rows, models = [], {"unpruned": base}
    plan = ([("macs", t, {"target_macs": t}) for t in args.macs]
            + [("latency", t, {"target_latency": t, "latency_runtime": args.runtime,
                               "latency_table": {"samples": args.samples}}) for t in args.latency])
    for kind, target, budget in plan:
        model = copy.deepcopy(base)
        metrics, model = prune(model, spec, splits, seed, {**budget, "round_to": m["round_to"],
                                                           "criterion": args.criterion}, timing)
        train(model, splits, args.finetune, m["lr"] / 3, seed)
        labels = on_runtime(model, spec, args.runtime, val.x, work).argmax(1)
        label = f"{kind} {target:g}"
        models[label] = model
        rows.append({"kind": kind, "target": target, "label": label, "macs_ratio": metrics["macs_ratio"],
                     "accuracy": float((labels == val.y).mean()),
                     "agreement_vs_unpruned_float": float((labels == float_labels).mean()),
                     **({"table": {k: metrics["latency"][k] for k in ("predicted_ratio", "measured_ratio", "error",
                                                                       "chosen_attempt", "table_samples")}}
                        if kind == "latency" else {})})
        print(f"  seed {seed} {label}: MACs {metrics['macs_ratio']:.2f} accuracy {rows[-1]['accuracy']:.4f}",
              flush=True)
    times = timed(models, spec, args.runtime, args.rounds, work)
    unpruned = statistics.median(times["unpruned"])
    for r in rows:
        r["p50_ms"] = statistics.median(times[r["label"]])
        r["process_p50s"] = times[r["label"]]
        r["measured_ratio"] = r["p50_ms"] / unpruned
        if r["kind"] == "latency":
            r["prediction_error"] = r["table"]["predicted_ratio"] / r["measured_ratio"] - 1
    mac_curve = [(r["measured_ratio"], r["accuracy"]) for r in rows if r["kind"] == "macs"]
    mac_agree = [(r["measured_ratio"], r["agreement_vs_unpruned_float"]) for r in rows if r["kind"] == "macs"]
    for r in rows:
        if r["kind"] == "latency":
            r["macs_accuracy_at_same_latency"], r["inside_macs_range"] = interpolate(mac_curve, r["measured_ratio"])
            r["macs_agreement_at_same_latency"], _ = interpolate(mac_agree, r["measured_ratio"])
    base_labels = on_runtime(base, spec, args.runtime, val.x, work).argmax(1)
    return {"seed": seed, "unpruned_p50_ms": unpruned, "unpruned_process_p50s": times["unpruned"],
            "unpruned_accuracy": float((base_labels == val.y).mean()), "rows": rows,
            "seconds": round(time.perf_counter() - started, 1)}


def prediction_seed(args: argparse.Namespace, seed: int, timing: Any, work: Path) -> dict[str, Any]:
    """The table's accuracy only: the seed's untrained model pruned to each latency target, measured interleaved.

    Latency does not depend on the weights; the seed changes which channels the criterion keeps, so each seed prunes
    different layers.
    """
    m = MODELS[args.model]
    spec, base, splits = setup(args.model, seed)
    models, rows = {"unpruned": base}, []
    for target in args.latency:
        model = copy.deepcopy(base)
        metrics, model = prune(model, spec, splits, seed, {"target_latency": target, "latency_runtime": args.runtime,
                                                           "latency_table": {"samples": args.samples},
                                                           "round_to": m["round_to"], "criterion": args.criterion},
                               timing)
        models[f"latency {target:g}"] = model
        rows.append({"target": target, "label": f"latency {target:g}", "macs_ratio": metrics["macs_ratio"],
                     "table": {k: metrics["latency"][k] for k in ("predicted_ratio", "measured_ratio", "error",
                                                                   "chosen_attempt", "table_samples", "attempts")}})
    times = timed(models, spec, args.runtime, args.rounds, work)
    unpruned = statistics.median(times["unpruned"])
    for r in rows:
        r["p50_ms"], r["process_p50s"] = statistics.median(times[r["label"]]), times[r["label"]]
        r["measured_ratio"] = r["p50_ms"] / unpruned
        r["prediction_error"] = r["table"]["predicted_ratio"] / r["measured_ratio"] - 1
        print(f"  seed {seed} {r['label']}: MACs {r['macs_ratio']:.2f} predicted {r['table']['predicted_ratio']:.3f} "
              f"measured {r['measured_ratio']:.3f} ({r['prediction_error']:+.1%})", flush=True)
    return {"seed": seed, "unpruned_p50_ms": unpruned, "unpruned_process_p50s": times["unpruned"], "rows": rows}


def prediction_markdown(args: argparse.Namespace, host: dict[str, Any], seeds: list[dict[str, Any]]) -> str:
    """The table-accuracy figures: per target, the predicted and measured latency ratios over the seeds."""
    rows = []
    for t in args.latency:
        rs = [next(r for r in s["rows"] if r["target"] == t) for s in seeds]
        rows.append([f"latency {t:g}", mean_std([r["table"]["predicted_ratio"] for r in rs]),
                     mean_std([r["measured_ratio"] for r in rs]), mean_std([r["table"]["measured_ratio"] for r in rs]),
                     " ".join(f"{r['prediction_error']:+.1%}" for r in rs),
                     f"{max(abs(r['prediction_error']) for r in rs):.1%}", mean_std([r["macs_ratio"] for r in rs])])
    return "\n".join([
        f"# Latency table accuracy: {args.model} on {args.runtime}", "",
        f"Host: {host['cpu']} ({host['cpu_flags']}; {host['logical_cores']} cores); {len(seeds)} seeds (each an "
        "untrained model: the seed decides which channels the criterion keeps). Each target pruned by the prune "
        f"stage with a {args.samples}-variant table; then every pruned model and the unpruned one timed in "
        f"{args.rounds} interleaved fresh processes (measured ratio = median p50 / unpruned median p50).", "",
        md_table(["target", "predicted ratio", "measured ratio (benchmark)", "measured ratio (stage check)",
                  "error per seed", "max |error|", "MACs ratio"], rows), ""])


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (population std over the seeds)."""
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def main() -> None:
    """Run the comparison and write ``results/optimize-<model>-<runtime>.{json,md}``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(MODELS), default="resnet18")
    p.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino", "litert"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--criterion", default="l1", choices=["l1", "l2", "taylor", "random"],
                   help="channel importance for both MAC-target and latency-target pruning")
    p.add_argument("--macs", type=float, nargs="+", default=[0.8, 0.6, 0.45, 0.3, 0.2])
    p.add_argument("--latency", type=float, nargs="+", default=[0.7, 0.5, 0.35])
    p.add_argument("--epochs", type=int, default=4, help="training epochs of the unpruned model")
    p.add_argument("--finetune", type=int, default=2, help="fine-tuning epochs after each pruning")
    p.add_argument("--samples", type=int, default=10, help="variants in the latency table")
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per model in the final timing")
    p.add_argument("--cache", help="latency-table cache folder (default: a fresh one, so the table is measured)")
    p.add_argument("--prediction-only", action="store_true",
                   help="only the table's accuracy: untrained models pruned to each latency target, no MAC targets")
    args = p.parse_args()

    import os

    from edgeship.core.environment import host_info, library_versions
    from edgeship.prune.latency_table import TimingTarget

    os.environ["EDGESHIP_CACHE"] = args.cache or tempfile.mkdtemp(prefix="edgeship-bench-cache-")
    timing = TimingTarget.of(None, 2, PROTOCOL.warmup, PROTOCOL.runs)
    work = Path(tempfile.mkdtemp(prefix="edgeship-bench-"))
    seeds = []
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        seeds.append((prediction_seed if args.prediction_only else one_seed)(args, seed, timing, work))
    host = host_info()
    if args.prediction_only:
        text = prediction_markdown(args, host, seeds)
        jp, mp = write_results(f"optimize-prediction-{args.model}-{args.runtime}",
                               {"benchmark": "optimize --prediction-only", "model": args.model,
                                "runtime": args.runtime, "args": vars(args), "host": host,
                                "versions": library_versions(), "seeds": seeds}, text)
        print(text)
        print(f"wrote {jp} and {mp}")
        return
    payload = {"benchmark": "optimize", "model": args.model, "runtime": args.runtime, "args": vars(args),
               "host": host, "versions": library_versions(), "seeds": seeds}
    lines = [f"# Latency-target vs MAC-target pruning: {args.model} on {args.runtime}",
             "", f"Host: {host['cpu']} ({host['cpu_flags']}; {host['logical_cores']} cores); {len(seeds)} seeds; "
                 f"{args.criterion} criterion, {args.finetune} fine-tuning epochs after pruning; each accuracy on the "
                 f"exported artifact on {args.runtime}; latency ratios from {args.rounds} interleaved fresh processes "
                 "per model against the unpruned model.", ""]
    table = []
    for t in args.latency:
        rs = [next(r for r in s["rows"] if r["kind"] == "latency" and r["target"] == t) for s in seeds]
        table.append([f"latency {t:g}", mean_std([r["measured_ratio"] for r in rs]),
                      mean_std([r["table"]["predicted_ratio"] for r in rs]),
                      mean_std([abs(r["prediction_error"]) for r in rs]),
                      f"{max(abs(r['prediction_error']) for r in rs):.1%}",
                      mean_std([r["macs_ratio"] for r in rs]), mean_std([r["accuracy"] for r in rs]),
                      mean_std([r["macs_accuracy_at_same_latency"] for r in rs]),
                      mean_std([r["accuracy"] - r["macs_accuracy_at_same_latency"] for r in rs]),
                      mean_std([r["agreement_vs_unpruned_float"] for r in rs]),
                      mean_std([r["macs_agreement_at_same_latency"] for r in rs]),
                      sum(r["inside_macs_range"] for r in rs)])
    lines += [md_table(["target", "measured latency ratio", "predicted ratio", "|prediction error|",
                        "max |error|", "MACs ratio", "accuracy", "MAC-target accuracy at same latency",
                        "difference", "agreement vs unpruned", "MAC-target agreement at same latency",
                        "seeds inside MAC range"], table), ""]
    mac_rows = []
    for t in args.macs:
        rs = [next(r for r in s["rows"] if r["kind"] == "macs" and r["target"] == t) for s in seeds]
        mac_rows.append([f"macs {t:g}", mean_std([r["measured_ratio"] for r in rs]),
                         mean_std([r["macs_ratio"] for r in rs]), mean_std([r["accuracy"] for r in rs]),
                         mean_std([r["agreement_vs_unpruned_float"] for r in rs])])
    lines += ["MAC-target curve:", "", md_table(["target", "measured latency ratio", "MACs ratio", "accuracy",
                                                   "agreement vs unpruned"], mac_rows), "",
              f"Unpruned accuracy {mean_std([s['unpruned_accuracy'] for s in seeds])}; unpruned p50 "
              f"{mean_std([s['unpruned_p50_ms'] for s in seeds])} ms."]
    suffix = "" if args.criterion == "l1" else f"-{args.criterion}"
    jp, mp = write_results(f"optimize-{args.model}-{args.runtime}{suffix}", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {jp} and {mp}")


if __name__ == "__main__":
    main()
