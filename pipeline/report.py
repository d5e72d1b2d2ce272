"""``report.json`` (the stable, machine-read record) and ``report.html`` rendered from it, never the reverse."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from edgeship.core.io import atomic_write_json, atomic_write_text


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}"
    return str(v)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    rows = [r for r in report["results"] if "latency" in r]
    if rows or report.get("pytorch_latency"):
        labels, p50, p90 = [], [], []
        if report.get("pytorch_latency"):
            labels.append("pytorch eager")
            p50.append(report["pytorch_latency"]["p50"])
            p90.append(report["pytorch_latency"]["p90"])
        for r in rows:
            labels.append(f"{r['runtime']} ({r['precision']})")
            p50.append(r["latency"]["p50"])
            p90.append(r["latency"]["p90"])
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(labels)))
        ax.barh(labels, p50, color="#4c72b0", label="p50")
        ax.errorbar(p90, labels, fmt="|", color="#c44e52", markersize=14, label="p90")
        ax.invert_yaxis()
        ax.set_xlabel(f"latency per call, ms (batch {rows[0]['latency']['batch'] if rows else 1}, "
                      f"{report['threads']} threads)")
        ax.legend(loc="lower right")
        plots.append(("Latency per runtime", _png(fig)))
    tables = {k: t for k, t in ((report.get("divergence") or {}).get("runtimes") or {}).items() if t.get("layers")}
    if tables:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for label, t in tables.items():
            ax.plot([r["position"] for r in t["layers"]], [r["sqnr_db"] for r in t["layers"]], marker="o", label=label)
        floor = max(tables.values(), key=lambda t: len(t["layers"]))["layers"]
        if any("floor_db" in r for r in floor):
            ax.plot([r["position"] for r in floor], [r.get("floor_db") for r in floor], color="grey", linestyle=":",
                    label="reference floor")
        ax.axhline(report["divergence"]["min_sqnr_db"], color="black", linestyle="--", label="threshold")
        ax.set_xlabel("depth (reference graph position)")
        ax.set_ylabel("SQNR vs reference, dB (200 = identical)")
        ax.legend(fontsize=7)
        plots.append(("SQNR by depth per runtime", _png(fig)))
    rows = [r for r in report["results"] if "metrics" in r]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
        vals = [r["metrics"]["top1_agreement"] for r in rows]
        colors = ["#55a868" if r["status"] == "pass" else "#8c8c8c" if r["status"] == "info" else "#c44e52"
                  for r in rows]
        ax.barh([r["runtime"] for r in rows], vals, color=colors)
        ax.axvline(report["gate_config"]["top1_agreement_min"], color="black", linestyle="--", label="gate")
        ax.set_xlim(min(0.9, min(vals) - 0.01), 1.0005)
        ax.invert_yaxis()
        ax.set_xlabel("top-1 agreement with the PyTorch reference")
        ax.legend(loc="lower left")
        plots.append(("Top-1 agreement per runtime", _png(fig)))
    return plots


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _accuracy_control_html(index: int, ac: dict[str, Any]) -> str:
    """Each fallback step with the agreement it reached on the PT2E model and the runtimes, and its latency cost."""
    runtimes = list(ac.get("runtimes") or ac.get("baseline_runtimes") or {})

    def on(measured: dict[str, Any] | None, label: str) -> Any:
        return None if measured is None else measured.get(label, {}).get("agreement", "not measured")

    rows = [["plain quantization", "", ac["baseline_agreement"],
             *(on(ac.get("baseline_runtimes"), k) for k in runtimes)]]
    rows += [[f["layer"], f["change"], f["agreement"], *(on(f.get("runtimes"), k) for k in runtimes)]
             for f in ac["fallback"]]
    verdict = (f"Target: agreement with the float model &ge; {_fmt(ac['target_agreement'])} on "
               f"{ac['held_out_rows']} held-out rows ({html.escape(str(ac.get('rows', '')))}), on the PT2E model"
               + (" and every gated runtime" if runtimes else "") + f": <b>{'met' if ac['met'] else 'not met'}</b>.")
    out = (f"<h2>Accuracy control (stage {index})</h2><p>{verdict}</p>"
           + _table(["layer that fell back", "change", "PT2E agreement", *runtimes], rows))
    cost = ac.get("latency_cost") or {}
    if cost:
        out += "<p>What the fallback cost in latency (probe timing, same runtime):</p>" + _table(
            ["runtime", "plain p50 ms", "with fallback p50 ms", "ratio"],
            [[k, v["before_p50_ms"], v["after_p50_ms"], v["ratio"]] for k, v in cost.items()])
    return out


DIVERGENCE_COLUMNS = ["runtime", "layers matched", "first divergent layer", "op", "SQNR dB", "reference floor dB",
                      "cosine", "tensor"]


def _first_divergent_row(label: str, table: dict[str, Any]) -> list[Any]:
    if "error" in table:
        return [label, 0, f"could not read its tensors: {table['error']}", None, None, None, None, None]
    f = table["first_divergent"]
    if f is None:
        # recovered rows are tensors matched to the wrong reference: the worst is among the others
        worst = min((r for r in table["layers"] if not r.get("recovered")), key=lambda r: r["sqnr_db"], default=None)
        return [label, table["matched"], "none", None, worst and worst["sqnr_db"], worst and worst.get("floor_db"),
                worst and worst["cosine"], None]
    return [label, table["matched"], f["layer"], f["op"], f["sqnr_db"], f.get("floor_db"), f["cosine"], f["tensor"]]


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page: verdict, tables and embedded PNG plots."""
    r = report
    status = r["status"].upper()
    parts = [f"<h1>edgeship report — {html.escape(r['name'])}</h1>",
             f"<p class='{r['status']}'><b>{status}</b> · {html.escape(r['created'])} · seed {r['seed']} · "
             f"{r['threads']} threads · {html.escape(str(r['host']['cpu']))} · {r['wall_seconds']} s</p>"]
    if r["failed_gates"]:
        parts.append("<h2>Failed gates</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in r["failed_gates"])
                     + "</ul>")
    if r.get("failed_exports"):
        parts.append("<h2>Formats that could not be converted</h2>" + _table(
            ["format", "op", "modules", "hint", "converter message"],
            [[f, e.get("op"), ", ".join(e.get("modules", [])[:5]), e.get("hint"), e.get("error", "").splitlines()[0]]
             for f, e in r["exports"].items() if e["status"] == "failed"]))
    if r["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in r["notes"]) + "</ul>")
    m = r["model"]
    parts.append("<h2>Model and data</h2>" + _table(["field", "value"], [
        ["source", m["source"]], ["weights", m["weights"] or "(as built)"], ["parameters", m["parameters"]],
        ["input shape", m["input_spec"]["shape"]],
        ["mean / std", f"{m['input_spec']['mean']} / {m['input_spec']['std']}"],
        ["validation data", r["data"]["validation"]], ["reference accuracy", r["reference"]["accuracy"]],
        ["reference tied top-1", r["reference"]["health"]["tied_fraction"]],
        ["reference classes predicted", r["reference"]["health"]["predicted_classes"]]]))
    if r["stages"]:
        parts.append("<h2>Stages</h2>" + _table(["#", "stage", "seconds", "reused", "key metrics"], [
            [s["index"], s["type"], s.get("seconds"), s.get("reused"),
             ", ".join(f"{k}={_fmt(v)}" for k, v in s["metrics"].items() if not isinstance(v, list | dict))]
            for s in r["stages"]]))
    if r["artifacts"]:
        parts.append("<h2>Artifacts</h2>" + _table(["format", "file", "MB", "export s", "converter", "sha256"], [
            [f, a["path"], a["size_bytes"] / 1e6, a["export_seconds"], a["converter"],
             next(iter(a["sha256"].values()))[:16]] for f, a in r["artifacts"].items()]))
    q = r.get("quantization")
    if q:
        parts.append("<h2>Quantization: bit widths per layer</h2>" + _table(
            ["layer", "kind", "weight bits", "activation bits", "why"],
            [[b["name"], b["kind"], b["weight_bits"], b["act_bits"], b["reason"]] for b in q["bits"]]))
        parts.append("<h2>Size against fp32</h2>" + _table(
            ["format", "MB", "fp32 MB", "ratio", "fp32 basis"],
            [[f, v["bytes"] / 1e6, v["fp32_bytes"] / 1e6, v["ratio_vs_fp32"], v["fp32_basis"]]
             for f, v in q["sizes"].items()]))
        parts.append("<h2>Against the float model (second reference)</h2>" + _table(
            ["runtime", "top-1 agree", "mismatch when float correct", "rel max err", "SQNR dB", "accuracy",
             "int8 p50 ms", "fp32 twin p50 ms", "speed-up vs fp32"],
            [[t["runtime"], t["metrics_vs_float"]["top1_agreement"],
              t["metrics_vs_float"].get("mismatch_when_reference_correct"), t["metrics_vs_float"]["rel_max_err"],
              t["metrics_vs_float"]["sqnr_db"], t["metrics_vs_float"].get("accuracy"),
              t.get("latency", {}).get("p50"), t.get("fp32_latency", {}).get("p50"), t.get("speedup_vs_fp32")]
             for t in r["results"] if "metrics_vs_float" in t]))
    for s in r["stages"]:
        if "accuracy_control" in s["metrics"]:
            parts.append(_accuracy_control_html(s["index"], s["metrics"]["accuracy_control"]))
    for s in r["stages"]:
        if s["type"] != "prune":
            continue
        m = s["metrics"]
        parts.append(f"<h2>Pruning (stage {s['index']}, {html.escape(str(m['criterion']))})</h2>" + _table(
            ["", "before", "after", "ratio"],
            [["MACs (M)", m["macs_before"] / 1e6, m["macs_after"] / 1e6, m["macs_ratio"]],
             ["params (M)", m["params_before"] / 1e6, m["params_after"] / 1e6, m["params_ratio"]]]) + _table(
            ["layer", "channels before", "channels after"],
            [[c["layer"], c["before"], c["after"]] for c in m["channels"] if c["before"] != c["after"]]))
    if any("speedup_vs_baseline" in t for t in r["results"]):
        parts.append("<h2>Measured speed against the unpruned model (same runtime)</h2>" + _table(
            ["runtime", "pruned p50 ms", "unpruned p50 ms", "speed-up"],
            [[t["runtime"], t["latency"]["p50"], t["baseline_latency"]["p50"], t["speedup_vs_baseline"]]
             for t in r["results"] if "speedup_vs_baseline" in t]))
    rows = []
    for t in r["results"]:
        mt = t.get("metrics", {})
        lat = t.get("latency", {})
        rows.append([t["runtime"], t["precision"], t.get("status", "—"), mt.get("top1_agreement"),
                     mt.get("top5_overlap"), mt.get("rel_max_err"), mt.get("max_abs_err"), mt.get("cosine"),
                     mt.get("sqnr_db"), mt.get("non_finite"), mt.get("accuracy"), lat.get("p50"), lat.get("p90"),
                     lat.get("p99"), t.get("speedup_vs_pytorch")])
    if r.get("pytorch_latency"):
        p = r["pytorch_latency"]
        rows.insert(0, ["pytorch eager", "fp32", "reference", 1.0, 1.0, 0.0, 0.0, 1.0, None, 0,
                        r["reference"]["accuracy"], p["p50"], p["p90"], p["p99"], 1.0])
    parts.append("<h2>Validation and latency</h2>" + _table(
        ["runtime", "precision", "status", "top-1 agree", "top-5 overlap", "rel max err", "max abs err", "cosine",
         "SQNR dB", "non-finite", "accuracy", "p50 ms", "p90 ms", "p99 ms", "speed-up vs PyTorch"], rows))
    x = r.get("cross_runtime")
    if x:
        names = x["executions"]
        parts.append("<h2>Cross-runtime agreement (top-1, every execution against every other)</h2>"
                     + _table(["", *names], [[a, *row] for a, row in zip(names, x["agreement"], strict=True)])
                     + "".join(f"<p><b>{html.escape(f['kind'])}</b>: {html.escape(f['detail'])}</p>"
                               for f in x["findings"]))
    dv = r.get("divergence")
    if dv:
        parts.append(f"<h2>Layer-wise divergence ({dv['samples']} samples against the {html.escape(dv['reference'])}; "
                     f"first layer below {dv['min_sqnr_db']:g} dB SQNR; reference floor: the reference against "
                     f"itself with a rounding-sized input perturbation)</h2>" + _table(
                         DIVERGENCE_COLUMNS, [_first_divergent_row(label, t) for label, t in dv["runtimes"].items()]))
    gate_rows = [[t["runtime"], g["gate"], g["value"], g["threshold"], "pass" if g["passed"] else "FAIL", g["detail"]]
                 for t in r["results"] if t.get("gated") for g in t.get("gates", [])]
    if gate_rows:
        parts.append("<h2>Gates</h2>" + _table(["runtime", "gate", "value", "threshold", "result", "detail"],
                                               gate_rows))
    for title, png in _plots(r):
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    c = r.get("check")
    if c:
        seen = ", ".join(f"{lv} {n} ops" for lv, n in c["ops_seen"].items())
        parts.append(f"<h2>Op support: {html.escape(c['profile'])} profile "
                     f"({'no violations' if c['passed'] else 'VIOLATED'}; {html.escape(seen)})</h2>" + _table(
                         ["level", "op", "canonical", "count", "reason", "detail", "where (first)"],
                         [[v["level"], v["op"], v["canonical"], v["count"], v["reason"], v["detail"],
                           ", ".join(v["where"][:3])] for v in c["violations"]]))
    op_rows = [[t["runtime"], o["op"], o["precision"], o["count"]] for t in r["results"] for o in t.get("ops", [])]
    if op_rows:
        parts.append("<h2>What actually runs</h2>" + _table(["runtime", "op", "precision", "count"], op_rows))
    parts.append("<h2>Versions</h2>" + _table(["library", "version"], [[k, v] for k, v in r["versions"].items()]))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
             "th{background:#f3f3f3}.pass b{color:#2a7a2a}.fail b{color:#b00020}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgeship — {html.escape(r['name'])}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(run_dir: Path, report: dict[str, Any]) -> list[Path]:
    """Write ``report.json`` and ``report.html`` atomically; return their paths."""
    json_path, html_path = run_dir / "report.json", run_dir / "report.html"
    atomic_write_json(json_path, report)
    atomic_write_text(html_path, render_html(report))
    return [json_path, html_path]


def summary_table(report: dict[str, Any]) -> Any:
    """A short rich table for the console: one row per runtime."""
    from rich.table import Table

    status = report["status"].upper() + (" (nothing was validated)" if report["status"] == "exported" else "")
    t = Table(title=f"edgeship · {report['name']} · {status}", title_justify="left")
    twins = [(key, title) for key, title in (("fp32", "vs fp32"), ("baseline", "vs unpruned"))
             if any(f"speedup_vs_{key}" in r for r in report["results"])]
    cols = ["runtime", "precision", "status", "top-1 agree", "rel max err", "p50 ms", "vs PyTorch"]
    longest = max((len(r["runtime"]) for r in report["results"]), default=0)
    for col in cols + [title for _, title in twins]:
        # Numbers and names never wrap or get cut ("onnxrunt…" read as another runtime): the table grows instead.
        t.add_column(col, justify="left" if col in ("runtime", "precision", "status") else "right", no_wrap=True,
                     min_width=max(longest, 13) if col == "runtime" else None)
    if report.get("pytorch_latency"):
        t.add_row("pytorch eager", "fp32", "reference", "—", "—", f"{report['pytorch_latency']['p50']:.3f}", "1.00x",
                  *(["—"] * len(twins)))
    for r in report["results"]:
        m, lat = r.get("metrics", {}), r.get("latency", {})
        style = {"pass": "green", "fail": "bold red", "info": "dim"}.get(r.get("status", ""), "")
        t.add_row(r["runtime"], r["precision"], f"[{style}]{r.get('status', '—')}[/]" if style else "—",
                  _fmt(m.get("top1_agreement")), _fmt(m.get("rel_max_err"), 2),
                  f"{lat['p50']:.3f}" if lat else "—",
                  f"{r['speedup_vs_pytorch']:.2f}x" if r.get("speedup_vs_pytorch") else "—",
                  *[f"{r[f'speedup_vs_{key}']:.2f}x" if r.get(f"speedup_vs_{key}") else "—" for key, _ in twins])
    return t


def divergence_summary(report: dict[str, Any]) -> Any:
    """A rich table for ``edgeship debug``: per runtime, layers matched and the first that diverges."""
    from rich.markup import escape
    from rich.table import Table

    dv = report.get("divergence") or {"runtimes": {}, "min_sqnr_db": 0, "samples": 0, "reference": "reference"}
    t = Table(title=f"layer-wise divergence ({dv['samples']} samples vs the {dv['reference']}; "
                    f"first below {dv['min_sqnr_db']:g} dB)", title_justify="left")
    for col in DIVERGENCE_COLUMNS:
        t.add_column(col)
    for label, table in dv["runtimes"].items():
        t.add_row(*[escape(_fmt(v)) for v in _first_divergent_row(label, table)])
    return t
