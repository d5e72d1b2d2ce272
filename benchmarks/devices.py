"""Profile one recipe on a list of devices and print the side-by-side table (agreement, p50, p90 per runtime).

    python benchmarks/devices.py RECIPE --devices local ssh://pi@board [--ssh-config FILE] [--python PATH]
                                 [--set key=value ...] [--name NAME]

Every device runs the same recipe through ``edgeship.run`` (stages, export, validation and timing; on an SSH
device through the device runner, a fresh process per row). Writes ``results/devices-<name>.json`` and ``.md``
with this host's CPU and flags and, per device, the CPU, OS and runtime versions its answers report.
"""

from __future__ import annotations

import argparse
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
    result = edgeship.run({**parsed, "device": device}, out=out)
    rows = {}
    for r in result.report["results"]:
        m, lat, d = r.get("metrics", {}), r.get("latency") or {}, r.get("device") or {}
        rows[r["runtime"]] = {"status": r.get("status"), "agreement": m.get("top1_agreement"),
                              "rel_max_err": m.get("rel_max_err"), "p50": lat.get("p50"), "p90": lat.get("p90"),
                              "rounds": lat.get("rounds"), "stable": lat.get("stable"), "cv": lat.get("round_p50_cv"),
                              "cpu": d.get("cpu", result.report["host"]["cpu"]), "os": d.get("os"),
                              "runtime_version": d.get("runtime_version")}
    return {"status": result.status, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--devices", nargs="+", default=["local"])
    ap.add_argument("--ssh-config", help="passed to ssh as -F")
    ap.add_argument("--python", default="python3", help="the Python on the SSH devices")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--name", help="results/devices-<name>.json (default: the recipe's name)")
    args = ap.parse_args()
    name = args.name or edgeship.load_recipe(args.recipe, args.overrides).name
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, url in enumerate(args.devices):
            device = {"url": url} if url == "local" else {"url": url, "python": args.python,
                                                          "ssh_config": args.ssh_config}
            runs[url] = profile(args.recipe, device, args.overrides, Path(tmp) / f"run{i}")
            print(f"devices: {url}: {runs[url]['status']}", flush=True)
    runtimes = list(dict.fromkeys(rt for run in runs.values() for rt in run["rows"]))

    def cell(url: str, rt: str) -> str:
        r = runs[url]["rows"].get(rt)
        if r is None:
            return "—"
        agree = "—" if r["agreement"] is None else f"{r['agreement']:.4f}"
        lat = "" if r["p50"] is None else f" · p50 {r['p50']:.3f} / p90 {r['p90']:.3f} ms"
        return f"{r['status']} {agree}{lat}" + ("" if r["stable"] in (None, True) else " (noisy)")

    table = md_table(["runtime", *args.devices], [[rt, *(cell(u, rt) for u in args.devices)] for rt in runtimes])
    host = host_info()
    markdown = "\n\n".join([f"# {name} on {len(args.devices)} devices (benchmarks/devices.py)",
                            f"Host: {host['cpu']} ({host['cpu_flags']}), {host['logical_cores']} cores. Cells: status, "
                            "top-1 agreement, latency measured on that device.", table])
    print(markdown)
    write_results(f"devices-{name}", {"recipe": args.recipe, "overrides": args.overrides, "host": host,
                                      "versions": library_versions(), "devices": runs}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
