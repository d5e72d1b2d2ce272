"""The report page's figures, drawn with matplotlib and embedded as PNG (the page needs no network).

Each figure answers one question at a glance: how fast is each runtime (log axis, so one slow PyTorch p90 cannot
flatten every other bar), does each row agree (coloured by its own agreement gate, not the run's status), how did
training go (loss and accuracy/agreement per epoch, per stage), and where does a runtime start to compute
something else (SQNR by depth).
"""

from __future__ import annotations

import base64
import io
from typing import Any

GREEN, RED, GREY, BLUE = "#2a7a2a", "#b00020", "#8c8c8c", "#4c72b0"
STATUS_COLOURS = {"pass": GREEN, "fail": RED}


def figures(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(id, title, base64 PNG)`` for every figure this report has data for (none for an empty section)."""
    import matplotlib

    matplotlib.use("Agg")
    out = []
    for make in (_latency, _agreement, _hot_spots, _training, _sqnr):
        out += make(report)
    return out


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _latency(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "latency" in r]
    bars = ([("pytorch eager (fp32)", report["pytorch_latency"], GREY)] if report.get("pytorch_latency") else [])
    bars += [(f"{r['runtime']} ({r['precision']})", r["latency"], STATUS_COLOURS.get(r.get("status", ""), BLUE))
             for r in rows]
    if not bars:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.45 * len(bars)))
    labels = [b[0] for b in bars]
    p50 = [b[1]["p50"] for b in bars]
    p90 = [max(b[1]["p90"], b[1]["p50"]) for b in bars]
    floor = min(p50) / 3  # a log axis has no zero: bars start a little left of the fastest
    ax.barh(labels, [v - floor for v in p50], left=floor, color=[b[2] for b in bars], alpha=0.85, label="p50")
    ax.errorbar(p50, labels, xerr=[[0] * len(bars), [h - m for h, m in zip(p90, p50, strict=True)]], fmt="none",
                ecolor="black", capsize=4, label="p50 to p90")
    for y, (m, h) in enumerate(zip(p50, p90, strict=True)):
        ax.annotate(f"{m:.3g} ms", (h, y), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(floor, max(p90) * 4)
    ax.invert_yaxis()
    batch = rows[0]["latency"]["batch"] if rows else 1
    ax.set_xlabel(f"latency per call, ms, log scale (batch {batch}, {report['threads']} threads)")
    ax.legend(loc="lower right", fontsize=8)
    return [("plot-latency", "Latency per runtime (p50 bar, p90 whisker)", _png(fig))]


def _agreement(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "metrics" in r]
    if not rows:
        return []

    def judged(r: dict[str, Any]) -> tuple[float, str]:
        m = r["metrics"]
        value = m.get("top1_agreement_within_step", m["top1_agreement"])
        gate = next((g for g in r.get("gates", []) if g["gate"] == "top1_agreement_min"), None)
        return value, GREY if gate is None or not r.get("gated") else GREEN if gate["passed"] else RED

    values = [judged(r) for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.45 * len(rows)))
    ax.barh([r["runtime"] for r in rows], [v for v, _ in values], color=[c for _, c in values])
    for y, (v, _) in enumerate(values):
        ax.annotate(f"{v:.4f}", (v, y), xytext=(-4, 0), textcoords="offset points", va="center", ha="right",
                    fontsize=8, color="white")
    ax.axvline(report["gate_config"]["top1_agreement_min"], color="black", linestyle="--", label="gate")
    ax.set_xlim(min(0.9, min(v for v, _ in values) - 0.02), 1.0005)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 agreement with the reference (green/red: that row's agreement gate; grey: not gated)")
    ax.legend(loc="lower left", fontsize=8)
    return [("plot-agreement", "Top-1 agreement per runtime", _png(fig))]


def _hot_spots(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r.get("op_profile", {}).get("ops")]
    if not rows:
        return []
    top = 8
    fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, sum(0.5 + 0.28 * min(top, len(r["op_profile"]["ops"]))
                                                            for r in rows)), squeeze=False)
    for ax, r in zip(axes[:, 0], rows, strict=True):
        ops = r["op_profile"]["ops"][:top]
        labels = [f"{o['type']} {o['module'] or o['name']}"[:48] for o in ops]
        colours = [BLUE if o["precision"].startswith(("int", "uint")) else GREY for o in ops]
        ax.barh(labels, [o["ms"] for o in ops], color=colours)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        cover = r["op_profile"]["coverage"]
        ax.set_title(f"{r['runtime']}: slowest ops" + ("" if cover is None else f" (all ops: {cover:.0%} of p50)"),
                     fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("ms per inference (blue: integer kernel, grey: float or data movement)")
    fig.tight_layout()
    return [("plot-hotspots", "Slowest ops per runtime", _png(fig))]


def _training(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    import matplotlib.pyplot as plt

    out = []
    for s in report["stages"]:
        epochs = s.get("metrics", {}).get("epochs")
        if not isinstance(epochs, list) or not epochs or not isinstance(epochs[0], dict):
            continue
        x = [e["epoch"] for e in epochs]
        fig, ax = plt.subplots(figsize=(7.5, 3))
        ax.plot(x, [e["loss"] for e in epochs], marker="o", color=BLUE, label="loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        right = ax.twinx()
        for key, colour in (("accuracy", GREEN), ("agreement", "#dd8452"), ("holdout_agreement", "#8172b3")):
            if any(isinstance(e.get(key), float) for e in epochs):
                right.plot(x, [e.get(key) for e in epochs], marker="s", color=colour, label=key.replace("_", " "))
        right.set_ylabel("validation accuracy / agreement")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
        out.append((f"plot-training-{s['index']}", f"Training curves: stage {s['index']} {s['type']}", _png(fig)))
    return out


def _sqnr(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    import matplotlib.pyplot as plt

    tables = {k: t for k, t in ((report.get("divergence") or {}).get("runtimes") or {}).items() if t.get("layers")}
    if not tables:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
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
    return [("plot-sqnr", "SQNR by depth per runtime", _png(fig))]
