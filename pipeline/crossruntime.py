"""The cross-runtime matrix: every execution of the model (artifact x runtime) against every other, and the odd one out.

The same model runs as several executions: the ``.onnx`` on onnxruntime and OpenVINO, the ``.tflite`` on LiteRT
and OpenVINO, the IR on OpenVINO. When they disagree, who is wrong matters: one runtime that disagrees with
every other execution, including other runtimes reading the *same file*, is a runtime problem; all the
executions of one file agreeing with each other and disagreeing with every other file is a *conversion*
problem (the file computes something else). A reference problem makes no execution stand out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

REFERENCE = "pytorch"


def _mode_labels(labels: list[np.ndarray]) -> np.ndarray:
    """Per sample, the most common label among ``labels`` (lowest label on a tie, like argmax)."""
    return np.array([np.bincount(col).argmax() for col in np.stack(labels).T])


def cross_runtime_matrix(outputs: dict[str, np.ndarray], formats: dict[str, str], reference: np.ndarray,
                         allowed: int) -> dict[str, Any]:
    """Pairwise top-1 agreement of every execution (and the PyTorch reference), and who stands out.

    ``outputs``: logits by execution label; ``formats``: the artifact format of each label; ``allowed``: how
    many differing samples two executions may have and still count as agreeing (from the top-1 gate).
    """
    labels = {REFERENCE: reference.argmax(1), **{k: v.argmax(1) for k, v in outputs.items()}}
    names = list(labels)
    n = len(reference)
    differ = {(a, b): int(np.sum(labels[a] != labels[b])) for a in names for b in names}
    agree = {pair: d <= allowed for pair, d in differ.items()}
    matrix = [[round(1 - differ[(a, b)] / n, 4) if n else 1.0 for b in names] for a in names]
    findings = [*_odd_runtimes(names, labels, agree, formats, n), *_odd_artifacts(names, labels, agree, formats, n)]
    if not findings and not all(agree.values()):
        pairs = sorted({tuple(sorted(p)) for p, ok in agree.items() if not ok})
        findings.append({"kind": "no_consensus", "detail": "executions disagree without one standing out: "
                         + "; ".join(f"{a} vs {b} on {differ[(a, b)]} of {n}" for a, b in pairs[:6])})
    return {"executions": names, "formats": {REFERENCE: "pytorch", **formats}, "agreement": matrix,
            "differing_samples": [[differ[(a, b)] for b in names] for a in names], "allowed": allowed,
            "findings": findings}


def _odd_runtimes(names: list[str], labels: dict[str, np.ndarray], agree: dict[tuple[str, str], bool],
                  formats: dict[str, str], n: int) -> list[dict[str, Any]]:
    """Executions that disagree with every other one while all the others agree among themselves."""
    found = []
    for odd in names:
        others = [x for x in names if x != odd]
        if odd == REFERENCE or len(others) < 2:
            continue
        if any(agree[(odd, o)] for o in others) or not all(agree[(a, b)] for a in others for b in others):
            continue
        consensus = _mode_labels([labels[o] for o in others])
        k = int(np.sum(labels[odd] != consensus))
        same_file = [o for o in others if formats.get(o) == formats[odd]]
        found.append({"kind": "runtime", "execution": odd, "format": formats[odd], "differing_samples": k,
                      "detail": f"{odd} disagrees with {len(others)} other executions of the same model on {k} of "
                                f"{n} samples" + (f", including {', '.join(same_file)} reading the same "
                                                  f"{formats[odd]} file: the runtime, not the conversion"
                                                  if same_file else "")})
    return found


def _odd_artifacts(names: list[str], labels: dict[str, np.ndarray], agree: dict[tuple[str, str], bool],
                   formats: dict[str, str], n: int) -> list[dict[str, Any]]:
    """Files whose executions (two or more) agree with each other and disagree with every other execution."""
    found = []
    for fmt in sorted(set(formats.values())):
        group = [x for x in names if formats.get(x) == fmt]
        rest = [x for x in names if x not in group]
        if len(group) < 2 or len(rest) < 2:
            continue
        inside = all(agree[(a, b)] for a in group for b in group)
        outside = all(agree[(a, b)] for a in rest for b in rest)
        if not (inside and outside and not any(agree[(g, r)] for g in group for r in rest)):
            continue
        k = int(np.sum(_mode_labels([labels[g] for g in group]) != _mode_labels([labels[r] for r in rest])))
        found.append({"kind": "conversion", "format": fmt, "executions": group, "differing_samples": k,
                      "detail": f"the {fmt} file computes something else: its {len(group)} executions "
                                f"({', '.join(group)}) agree with each other and disagree with the {len(rest)} "
                                f"others ({', '.join(rest)}) on {k} of {n} samples: the conversion, not a runtime"})
    return found
