"""Profile one recipe on a list of devices and print the side-by-side table (agreement, p50, op coverage).

    python benchmarks/devices.py RECIPE --devices local ssh://pi@board [--repeats N] [--ssh-config FILE]
                                 [--python PATH] [--set key=value ...] [--name NAME]

Every device runs the same recipe through ``edgeship.run`` (stages, export, validation and timing, a fresh
process per row), ``--repeats`` times, so each row's p50 is measured in that many processes per device: their
spread is the process-to-process noise a comparison between devices must beat (the rounds' CV inside one
process understates it). Writes ``results/devices-<name>.json`` and ``.md`` with this host's CPU and flags and,
per device, the CPU, OS and runtime versions its answers report, and each row's per-op coverage (sum of the
runtime profiler's op times over the p50).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import md_table, write_results

import edgeship
from edgeship.core.environment import host_info, library_versions


def profile(recipe: str, device: dict[str, Any], overrides: list[str], out: Path) -> dict[str, Any]:
    """One run of ``recipe`` on ``device``: per runtime, what the gates judged and the latency measured there."""
    parsed = edgeship.load_recipe(recipe, overrides).dump()
    result = edgeship.run({**parsed, "device": device}, out=out, resume=True)
    rows = {}
    for r in result.report["results"]:
        m, lat, d = r.get("metrics", {}), r.get("latency") or {}, r.get("device") or {}
        ops = r.get("op_profile") or {}
        rows[r["runtime"]] = {"status": r.get("status"), "agreement": m.get("top1_agreement"),
                              "rel_max_err": m.get("rel_max_err"), "p50": lat.get("p50"), "p90": lat.get("p90"),
                              "rounds": lat.get("rounds"), "stable": lat.get("stable"), "cv": lat.get("round_p50_cv"),
                              "op_coverage": ops.get("coverage"), "ops_profiled": len(ops.get("ops", [])),
                              "top_ops": [(o["type"], o["module"], o["precision"], o["ms"]) for o in ops.get("ops",
                                                                                                          [])[:3]],
                              "cpu": d.get("cpu", result.report["host"]["cpu"]), "os": d.get("os"),
                              "runtime_version": d.get("runtime_version")}
    return {"status": result.status, "rows": rows, "report": str(out / "report.html")}


def cv(values: list[float]) -> float:
    """Process-to-process coefficient of variation of one row's p50s (sample std over mean)."""
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def standard_errors(a: list[float], b: list[float]) -> float:
    """How many standard errors apart the two devices' mean p50s are (Welch's t statistic)."""
    se = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    return abs(statistics.mean(a) - statistics.mean(b)) / se if se else float("inf")


def render(name: str, devices: list[str], runs: dict[str, list[dict[str, Any]]], host: dict[str, Any],
           repeats: int) -> str:
    """The side-by-side table and the comparison of each device's p50s with the first device's."""
    runtimes = list(dict.fromkeys(rt for rs in runs.values() for run in rs for rt in run["rows"]))

    def p50s(url: str, rt: str) -> list[float]:
        return [run["rows"][rt]["p50"] for run in runs[url] if rt in run["rows"] and run["rows"][rt]["p50"]]

    def cell(url: str, rt: str) -> str:
        r = runs[url][0]["rows"].get(rt)
        if r is None:
            return "—"
        agree = "—" if r["agreement"] is None else f"{r['agreement']:.4f}"
        times = p50s(url, rt)
        lat = f" · p50 {' / '.join(f'{t:.3f}' for t in times)} ms" if times else ""
        cover = "" if r["op_coverage"] is None else f" · ops {r['op_coverage']:.0%}"
        noisy = any(run["rows"].get(rt, {}).get("stable") is False for run in runs[url])
        return f"{r['status']} {agree}{lat}{cover}" + (" (noisy)" if noisy else "")

    table = md_table(["runtime", *devices], [[rt, *(cell(u, rt) for u in devices)] for rt in runtimes])
    first, others = devices[0], devices[1:]
    comparison = []
    for rt in runtimes:
        base = p50s(first, rt)
        for url in others:
            there = p50s(url, rt)
            if len(base) > 1 and len(there) > 1:
                delta = (statistics.mean(there) - statistics.mean(base)) / statistics.mean(base)
                noise = ((cv(base) ** 2 + cv(there) ** 2) / 2) ** 0.5
                comparison.append([rt, url, f"{delta:+.1%}", f"{cv(base):.1%}", f"{cv(there):.1%}",
                                   f"{abs(delta) / noise:.1f}", "yes" if abs(delta) <= 2 * noise else "no",
                                   f"{standard_errors(base, there):.1f}"])
    compare = md_table(["runtime", "device", f"Δ mean p50 vs {first}", f"process CV, {first}", "process CV, device",
                        "|Δ| / pooled CV", "within noise (≤ 2 CV)", "Welch t of the means"], comparison)
    return "\n\n".join([
        f"# {name} on {len(devices)} devices (benchmarks/devices.py)",
        f"Host: {host['cpu']} ({host['cpu_flags']}), {host['logical_cores']} cores. Cells: status, top-1 agreement, "
        f"the p50 of each of {repeats} runs (a fresh process each) measured on that device, and the share of that "
        "p50 the runtime's per-op profile accounts for.", table,
        f"p50 against {first}: the difference of the means over the processes; each device's process-to-process "
        "coefficient of variation (the noise of one measurement); the difference in units of the pooled CV (within "
        "the noise when ≤ 2); and Welch's t of the two means (> 2: a difference the repeats can resolve, even when "
        "it is inside one measurement's noise).", compare])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", help="a recipe, or with --render a results/devices-<name>.json to render again")
    ap.add_argument("--devices", nargs="+", default=["local"])
    ap.add_argument("--ssh-config", help="passed to ssh as -F")
    ap.add_argument("--python", default="python3", help="the Python on the SSH devices")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--repeats", type=int, default=1, help="runs per device (each row timed in a new process)")
    ap.add_argument("--name", help="results/devices-<name>.json (default: the recipe's name)")
    ap.add_argument("--render", action="store_true", help="render the tables of a results JSON again")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(Path(args.recipe).read_text())
        name = Path(args.recipe).stem.removeprefix("devices-")
        markdown = render(name, list(saved["devices"]), saved["devices"], saved["host"], saved["repeats"])
        print(markdown)
        write_results(f"devices-{name}", saved, markdown)
        return 0
    name = args.name or edgeship.load_recipe(args.recipe, args.overrides).name
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, url in enumerate(args.devices):
            device = {"url": url} if url == "local" else {"url": url, "python": args.python,
                                                          "ssh_config": args.ssh_config}
            for k in range(args.repeats):  # the same run folder: stages reused, every row timed again
                runs.setdefault(url, []).append(profile(args.recipe, device, args.overrides, Path(tmp) / f"run{i}"))
                print(f"devices: {url} #{k + 1}: {runs[url][-1]['status']}", flush=True)
    host = host_info()
    markdown = render(name, args.devices, runs, host, args.repeats)
    print(markdown)
    write_results(f"devices-{name}", {"recipe": args.recipe, "overrides": args.overrides, "host": host,
                                      "repeats": args.repeats, "versions": library_versions(), "devices": runs},
                  markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
