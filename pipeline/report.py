"""``report.json`` (the stable, machine-read record) and ``report.html`` rendered from it, never the reverse."""

from __future__ import annotations

import html
import re
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


def _ratio(v: Any) -> str:
    """A speed-up as the console prints it: ``6.43x``."""
    return "—" if v is None else f"{v:.2f}x"


def _table(headers: list[str], rows: list[list[Any]], wrap: tuple[int, ...] = ()) -> str:
    """A table that never wraps a number and scrolls sideways on a narrow screen; nothing when there are no rows.

    Columns in ``wrap`` hold prose and may wrap. An empty table with headers only says nothing, so none is drawn.
    """
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td{' class=wrap' if i in wrap else ''}>{html.escape(_fmt(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _section(title: str, body: str, anchor: str = "") -> str:
    """``<h2>`` + body, or nothing when the body is empty."""
    ident = f" id='{anchor}'" if anchor else ""
    return f"<h2{ident}>{html.escape(title)}</h2>{body}" if body else ""


def _anchor(label: str) -> str:
    return "gates-" + re.sub(r"[^\w-]", "-", label)


def _reason(row: dict[str, Any]) -> str | None:
    """The first failed gate of a row, in one line."""
    failed = next((g for g in row.get("gates", []) if not g["passed"]), None)
    if failed is None:
        return row.get("error")
    detail = failed["detail"]
    return f"{failed['gate']}: {detail[:157] + '...' if len(detail) > 160 else detail}"


def _card(r: dict[str, Any], report: dict[str, Any]) -> str:
    """One runtime at a glance: verdict, agreement, error, latency and speed-ups, precision run, device."""
    status = r.get("status") or report["status"]
    m, lat = r.get("metrics", {}), r.get("latency", {})
    agree = m.get("top1_agreement_within_step", m.get("top1_agreement"))
    error = (f"cosine {_fmt(m.get('cosine'), 6)}" if "metrics_vs_float" in r
             else f"rel max err {_fmt(m.get('rel_max_err'), 2)}") if m else "not validated"
    speed = " · ".join(f"{_ratio(r[k])} vs {name}" for k, name in (("speedup_vs_pytorch", "PyTorch"),
                                                                     ("speedup_vs_fp32", "fp32"),
                                                                     ("speedup_vs_baseline", "unpruned")) if r.get(k))
    lines = [f"<div class=verdict>{html.escape(status.upper())}</div>",
             f"<div class=runtime>{html.escape(r['runtime'])}</div>",
             f"<div>agreement <b>{_fmt(agree)}</b>" + (f" · vs float {_fmt(r['metrics_vs_float']['top1_agreement'])}"
                                                      if "metrics_vs_float" in r else "") + "</div>",
             f"<div>{html.escape(error)}</div>",
             f"<div>p50 <b>{lat['p50']:.3f} ms</b>" + (f" · {html.escape(speed)}" if speed else "") + "</div>"
             if lat else "<div>latency not measured</div>",
             f"<div>precision run: {html.escape(str(r.get('precision')))}</div>",
             f"<div class=device>device: {html.escape(_where(r, report))}</div>"]
    if r.get("note"):  # a row its device could not validate or run
        lines.append(f"<div class=reason>{html.escape(r['note'])}</div>")
    reason = _reason(r) if status == "fail" else None
    if reason:
        lines.append(f"<div class=reason>{html.escape(reason)}</div>")
    if r.get("gates"):
        lines.append(f"<a href='#{_anchor(r['runtime'])}'>details</a>")
    return f"<div class='card {html.escape(status)}'>{''.join(lines)}</div>"


def _where(r: dict[str, Any], report: dict[str, Any]) -> str:
    """Where a row's figures were measured: this machine, or the device that answered (its name and CPU)."""
    d = r.get("device")
    if not d:
        return f"local ({report['host']['cpu']})"
    return f"{d.get('hostname')} ({d.get('cpu')}) via {d['url']}" if d.get("hostname") else d["url"]


def _cards(report: dict[str, Any]) -> str:
    """A card per row, failures first, then the gated rows, then what is only reported."""
    order = {"fail": 0, "error": 0, "pass": 1}
    rows = sorted(report["results"], key=lambda r: (order.get(r.get("status", ""), 2), r.get("cross_check", False)))
    return "<section class=cards>" + "".join(_card(r, report) for r in rows) + "</section>" if rows else ""


def _slower_than_fp32(report: dict[str, Any]) -> str:
    """A warning for every quantized artifact measured slower than its own fp32 twin on the same runtime."""
    slow = [r for r in report["results"] if r.get("speedup_vs_fp32") is not None and r["speedup_vs_fp32"] < 1]
    return "".join(
        f"<div class=warn><b>Slower than fp32:</b> {html.escape(r['runtime'])} runs the {html.escape(r['precision'])} "
        f"artifact in {r['latency']['p50']:.3f} ms, its fp32 twin in {r['fp32_latency']['p50']:.3f} ms "
        f"({_ratio(r['speedup_vs_fp32'])}): on this host, quantizing does not pay off on this runtime.</div>"
        for r in slow)


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


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}"
    ".scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left;white-space:nowrap;"
    "font-variant-numeric:tabular-nums}td.wrap{white-space:normal;min-width:18em}th{background:#f3f3f3}"
    ".badge{display:inline-block;padding:2px 12px;border-radius:4px;color:#fff;font-weight:bold;background:#8c8c8c}"
    ".badge.pass{background:#2a7a2a}.badge.fail{background:#b00020}.meta{color:#555;font-size:14px}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px;margin:1em 0}"
    ".card{border:1px solid #ccc;border-left:8px solid #8c8c8c;border-radius:6px;padding:10px;font-size:14px;"
    "line-height:1.5}.card.pass{border-left-color:#2a7a2a}.card.fail{border-left-color:#b00020}"
    ".card .verdict{font-size:18px;font-weight:bold;color:#8c8c8c}.card.pass .verdict{color:#2a7a2a}"
    ".card.fail .verdict{color:#b00020}.card .runtime{font-weight:bold}.card .device{color:#555}"
    ".card .reason{color:#b00020;margin-top:4px}.warn{background:#fff3cd;border:1px solid #e0b000;padding:8px;"
    "border-radius:4px;margin:.5em 0}img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:8px;"
    "overflow-x:auto;font-size:12px}footer{margin-top:2em;border-top:1px solid #ccc}"
)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (no network): the verdict and a card per runtime first, the detail below."""
    from edgeship.report_plots import figures

    r = report
    plots = {ident: (title, png) for ident, title, png in figures(r)}

    def plot(ident: str) -> str:
        if ident not in plots:
            return ""
        title, png = plots[ident]
        return f"<figure id='{ident}'><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'></figure>"

    status = r["status"]
    parts = [f"<h1>edgeship report — {html.escape(r['name'])} <span class='badge {html.escape(status)}'>"
             f"{html.escape(status.upper())}</span></h1>",
             f"<p class=meta>{html.escape(r['created'])} · seed {r['seed']} · {r['threads']} threads · "
             f"{html.escape(str(r['host']['cpu']))} · {r['wall_seconds']} s"
             + (" · nothing was validated" if status == "exported" else "") + "</p>",
             _cards(r), _slower_than_fp32(r)]
    if r["failed_gates"]:
        parts.append("<h2>Failed gates</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in r["failed_gates"])
                     + "</ul>")
    parts.append(_section("Formats that could not be converted", _table(
        ["format", "op", "modules", "hint", "converter message"],
        [[f, e.get("op"), ", ".join(e.get("modules", [])[:5]), e.get("hint"), e.get("error", "").splitlines()[0]]
         for f, e in r["exports"].items() if e["status"] == "failed"], wrap=(2, 3, 4))))
    if r["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in r["notes"]) + "</ul>")
    rows = []
    for t in r["results"]:
        mt, lat = t.get("metrics", {}), t.get("latency", {})
        rows.append([t["runtime"], t["precision"], t.get("status", "—"), mt.get("top1_agreement"),
                     mt.get("top5_overlap"), _fmt(mt.get("rel_max_err"), 2), _fmt(mt.get("max_abs_err"), 2),
                     mt.get("cosine"), mt.get("sqnr_db"), mt.get("non_finite"), mt.get("accuracy"), lat.get("p50"),
                     lat.get("p90"), lat.get("p99"), _ratio(t.get("speedup_vs_pytorch"))])
    if r.get("pytorch_latency"):
        pl = r["pytorch_latency"]
        rows.insert(0, ["pytorch eager", "fp32", "reference", None, None, None, None, None, None, None,
                        r["reference"]["accuracy"], pl["p50"], pl["p90"], pl["p99"], _ratio(1.0)])
    parts.append(_section("Validation and latency", _table(
        ["runtime", "precision", "status", "top-1 agree", "top-5 overlap", "rel max err", "max abs err", "cosine",
         "SQNR dB", "non-finite", "accuracy", "p50 ms", "p90 ms", "p99 ms", "speed-up vs PyTorch"], rows)
        + plot("plot-latency") + plot("plot-agreement")))
    m = r["model"]
    parts.append(_section("Model and data", _table(["field", "value"], [
        ["source", m["source"]], ["weights", m["weights"] or "(as built)"], ["parameters", m["parameters"]],
        ["input shape", m["input_spec"]["shape"]],
        ["mean / std", f"{m['input_spec']['mean']} / {m['input_spec']['std']}"],
        ["validation data", r["data"]["validation"]], ["reference accuracy", r["reference"]["accuracy"]],
        ["reference tied top-1", r["reference"]["health"]["tied_fraction"]],
        ["reference classes predicted", r["reference"]["health"]["predicted_classes"]]], wrap=(1,))))
    parts.append(_section("Stages", _table(["#", "stage", "seconds", "reused", "key metrics"], [
        [s["index"], s["type"], s.get("seconds"), s.get("reused"),
         ", ".join(f"{k}={_fmt(v)}" for k, v in s["metrics"].items() if not isinstance(v, list | dict))]
        for s in r["stages"]], wrap=(4,)) + "".join(plot(f"plot-training-{s['index']}") for s in r["stages"])))
    parts.append(_section("Artifacts", _table(["format", "file", "MB", "export s", "converter", "sha256"], [
        [f, a["path"], a["size_bytes"] / 1e6, a["export_seconds"], a["converter"],
         next(iter(a["sha256"].values()))[:16]] for f, a in r["artifacts"].items()])))
    q = r.get("quantization")
    if q:
        parts.append(_section("Against the float model (second reference)", _table(
            ["runtime", "top-1 agree", "mismatch when float correct", "rel max err", "SQNR dB", "accuracy",
             "int8 p50 ms", "fp32 twin p50 ms", "speed-up vs fp32"],
            [[t["runtime"], t["metrics_vs_float"]["top1_agreement"],
              t["metrics_vs_float"].get("mismatch_when_reference_correct"),
              _fmt(t["metrics_vs_float"]["rel_max_err"], 2), t["metrics_vs_float"]["sqnr_db"],
              t["metrics_vs_float"].get("accuracy"), t.get("latency", {}).get("p50"),
              t.get("fp32_latency", {}).get("p50"), _ratio(t.get("speedup_vs_fp32"))]
             for t in r["results"] if "metrics_vs_float" in t])))
        parts.append(_section("Quantization: bit widths per layer", _table(
            ["layer", "kind", "weight bits", "activation bits", "why"],
            [[b["name"], b["kind"], b["weight_bits"], b["act_bits"], b["reason"]] for b in q["bits"]], wrap=(4,))))
        parts.append(_section("Size against fp32", _table(
            ["format", "MB", "fp32 MB", "ratio", "fp32 basis"],
            [[f, v["bytes"] / 1e6, v["fp32_bytes"] / 1e6, v["ratio_vs_fp32"], v["fp32_basis"]]
             for f, v in q["sizes"].items()])))
    for s in r["stages"]:
        if "accuracy_control" in s["metrics"]:
            parts.append(_accuracy_control_html(s["index"], s["metrics"]["accuracy_control"]))
        if s["type"] == "prune":
            pm = s["metrics"]
            parts.append(_section(f"Pruning (stage {s['index']}, {pm['criterion']})", _table(
                ["", "before", "after", "ratio"],
                [["MACs (M)", pm["macs_before"] / 1e6, pm["macs_after"] / 1e6, pm["macs_ratio"]],
                 ["params (M)", pm["params_before"] / 1e6, pm["params_after"] / 1e6, pm["params_ratio"]]])
                + _prune_latency_html(pm.get("latency"))
                + _table(["layer", "channels before", "channels after"],
                         [[c["layer"], c["before"], c["after"]] for c in pm["channels"] if c["before"] != c["after"]])))
    parts.append(_section("Measured speed against the unpruned model (same runtime)", _table(
        ["runtime", "pruned p50 ms", "unpruned p50 ms", "speed-up"],
        [[t["runtime"], t["latency"]["p50"], t["baseline_latency"]["p50"], _ratio(t["speedup_vs_baseline"])]
         for t in r["results"] if "speedup_vs_baseline" in t])))
    x = r.get("cross_runtime")
    if x:
        names = x["executions"]
        parts.append(_section("Cross-runtime agreement (top-1, every execution against every other)",
                              _table(["", *names], [[a, *row] for a, row in zip(names, x["agreement"], strict=True)])
                              + "".join(f"<p><b>{html.escape(f['kind'])}</b>: {html.escape(f['detail'])}</p>"
                                        for f in x["findings"])))
    dv = r.get("divergence")
    if dv:
        parts.append(_section(
            f"Layer-wise divergence ({dv['samples']} samples against the {dv['reference']}; first layer below "
            f"{dv['min_sqnr_db']:g} dB SQNR; reference floor: the reference against itself with a rounding-sized "
            "input perturbation)",
            _table(DIVERGENCE_COLUMNS, [_first_divergent_row(label, t) for label, t in dv["runtimes"].items()])
            + plot("plot-sqnr")))
    gated = [t for t in r["results"] if t.get("gated") and t.get("gates")]
    if gated:
        parts.append("<h2>Gates</h2>" + "".join(
            f"<h3 id='{_anchor(t['runtime'])}'>{html.escape(t['runtime'])}</h3>"
            + _table(["gate", "value", "threshold", "result", "detail"],
                     [[g["gate"], g["value"], g["threshold"], "pass" if g["passed"] else "FAIL", g["detail"]]
                      for g in t["gates"]], wrap=(4,)) for t in gated))
    c = r.get("check")
    if c:
        seen = ", ".join(f"{lv} {n} ops" for lv, n in c["ops_seen"].items())
        parts.append(f"<h2>Op support: {html.escape(c['profile'])} profile "
                     f"({'no violations' if c['passed'] else 'VIOLATED'}; {html.escape(seen)})</h2>" + _table(
                         ["level", "op", "canonical", "count", "reason", "detail", "where (first)"],
                         [[v["level"], v["op"], v["canonical"], v["count"], v["reason"], v["detail"],
                           ", ".join(v["where"][:3])] for v in c["violations"]], wrap=(5, 6)))
    parts.append(_section("Hot spots: the slowest ops, from each runtime's own profiler", _hot_spots(r)
                          + plot("plot-hotspots")))
    parts.append(_section("What actually runs", _table(
        ["runtime", "op", "precision", "count"],
        [[t["runtime"], o["op"], o["precision"], o["count"]] for t in r["results"] for o in t.get("ops", [])])))
    parts.append(_footer(r))
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>edgeship — {html.escape(r['name'])}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def _hot_spots(r: dict[str, Any]) -> str:
    """Per profiled row: how much of p50 its ops explain, how they were measured, then its slowest ops."""
    from edgeship.targets.hotspots import TOP

    out = []
    for t in r["results"]:
        prof = t.get("op_profile")
        if not prof:
            continue
        title = f"<h3>{html.escape(t['runtime'])}</h3>"
        if "error" in prof:
            out.append(f"{title}<p>No op profile: {html.escape(prof['error'])}</p>")
            continue
        cover = "" if prof["coverage"] is None else f" = {prof['coverage']:.0%} of the p50"
        out.append(f"{title}<p class=meta>{len(prof['ops'])} ops, {_fmt(prof['total_ms'])} ms in all{cover}; "
                   f"{html.escape(prof['method'])}.</p>" + _table(
                       ["op", "module", "type", "precision", "ms", "share of p50"],
                       [[o["name"] if len(o["name"]) <= 60 else o["name"][:28] + "…" + o["name"][-28:],
                         o["module"] or "—", o["type"], o["precision"], o["ms"],
                         "—" if o["share"] is None else f"{o['share']:.1%}"] for o in prof["ops"][:TOP]], wrap=(0,)))
    return "".join(out)


def _footer(r: dict[str, Any]) -> str:
    """How to reproduce the run: the resolved recipe, the command line, the environment, the logs."""
    import yaml

    logs = "".join(f"<li><a href='{html.escape(p)}'>{html.escape(p)}</a></li>" for p in r.get("logs", []))
    host = r["host"]
    env = _table(["", ""], [["command line", r.get("command")], ["python", host.get("python")],
                            ["OS", host.get("platform")], ["CPU", f"{host['cpu']} ({host.get('logical_cores')} "
                                                                  f"cores; {host.get('cpu_flags')})"],
                            *[[k, v] for k, v in r["versions"].items()]], wrap=(1,))
    recipe = (f"<h3>Resolved recipe</h3><pre>{html.escape(yaml.safe_dump(r['recipe'], sort_keys=False))}</pre>"
              if r.get("recipe") else "")
    return ("<footer><h2>Reproduce</h2>" + recipe + "<h3>Environment</h3>" + env
            + (f"<h3>Logs</h3><ul>{logs}</ul>" if logs else "") + "</footer>")


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


def _prune_latency_html(lat: dict[str, Any] | None) -> str:
    """A latency-target prune: the lookup table's prediction beside what was measured.

    Measured twice: by the stage's own check and on the run's artifact, each as a fraction of the unpruned
    model's latency on the same runtime.
    """
    if not lat:
        return ""
    rows = [[f"stage check, attempt {i}", a["predicted_ms"], a["predicted_ratio"], a["pruned_p50_ms"],
             a["unpruned_p50_ms"], a["measured_ratio"], f"{a['error']:+.1%}"]
            for i, a in enumerate(lat["attempts"], start=1)]
    art = lat.get("artifact") or {}
    if "p50_ms" in art:
        rows.append([f"this run's artifact ({art['row']})", lat["predicted_ms"], art["predicted_ratio"], art["p50_ms"],
                     art["unpruned_p50_ms"], art["measured_ratio"], f"{art['error']:+.1%}"])
    note = f"<p>{html.escape(art['note'])}</p>" if "note" in art else ""
    return (f"<p>Target {lat['target_ms']:.4g} ms on {html.escape(lat['runtime'])} ({html.escape(lat['device'])}, "
            f"{lat['threads']} threads): the table ({lat['table_samples']} measured variants, "
            f"{html.escape(lat['table'])}) predicted {lat['predicted_ms']:.4g} ms of "
            f"{lat['unpruned_predicted_ms']:.4g} ms unpruned.</p>" + note
            + _table(["measured where", "predicted ms", "predicted ratio", "measured p50 ms", "unpruned p50 ms",
                      "measured ratio", "error"], rows))


def latency_table_text(summary: dict[str, Any]) -> Any:
    """``edgeship latency-table``: the layers' in-graph times, and the measured variants against the fit."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    layers = Table(title=f"latency table · {summary['model']} on {summary['runtime']} {summary['runtime_version']} · "
                         f"{summary['device']} · {summary['threads']} threads", title_justify="left")
    for col in ("layer", "signature", "cin", "cout", "points", "ms", "ms at half width"):
        layers.add_column(col, justify="left" if col in ("layer", "signature") else "right")
    for x in summary["layers"]:
        layers.add_row(escape(x["layer"]), x["signature"], str(x["cin"]), str(x["cout"]), str(x["points"]),
                       f"{x['ms']:.4f}", f"{x['ms_half_width']:.4f}")
    layers.add_row("(no layer)", "pooling, adds, layout", "", "", "", f"{summary['rest_ms']:.4f}", "")
    variants = Table(title=f"measured variants against the table (cache {summary['cache_mb']:g} MB fitted; "
                           f"p50 = {summary['link'][0]:.3f} + {summary['link'][1]:.3f} x layers)",
                     title_justify="left")
    for col in ("variant", "weights MB", "measured p50 ms", "per process", "predicted ms", "error"):
        variants.add_column(col, justify="left" if col == "variant" else "right")
    for v in summary["samples"]:
        variants.add_row(v["label"], f"{v['weights_mb']:.1f}", f"{v['p50_ms']:.4f}",
                         " ".join(f"{r:.3f}" for r in v.get("process_p50s", [])), f"{v['predicted_ms']:.4f}",
                         f"{v['predicted_ms'] / v['p50_ms'] - 1:+.1%}")
    return Group(layers, variants, escape(f"unpruned: {summary['predicted_ms']:.4f} ms predicted; every layer at "
                                          f"half width: {summary['predicted_half_ms']:.4f} ms. Table: "
                                          f"{summary['path']}"))


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
