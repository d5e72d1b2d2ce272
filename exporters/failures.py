"""A failed conversion as a record the report can show: the format, the op and module it failed at, a hint.

Converters fail in their own words ("Lowering not found: aten.bucketize.Tensor", "'tfl.average_pool_2d' op
quantization parameters violate the same scale constraint"); this reads the op out of the message and, for
an aten op, the modules of the model that call it, so a user sees where to look without reading a log.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# (pattern whose group 1 is the op, hint). First match wins.
KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Lowering not found: (aten\.[\w.]+)"),
     "the converter has no lowering for this op: replace it in the model (edgeship check lists every op a "
     "profile lacks) or leave this format out of export.formats"),
    (re.compile(r"'(tfl\.\w+)' op quantization parameters violate the same scale constraint"),
     "this op needs the same quantization parameters on its input and output; the quantizer gave them "
     "different scales"),
    (re.compile(r"(?:Unsupported|unsupported|No decomposition|not supported)[^\n]*?(aten[.:]{1,2}[\w.]+)"),
     "the converter does not support this op: replace it in the model or leave this format out of "
     "export.formats"),
)
NEEDS = re.compile(r"needs the (\w+) artifact, whose export failed")
DATA_DEPENDENT = re.compile(r"GuardOnDataDependentSymNode|data-dependent expression")
FRAME = re.compile(r"File: (\S+?):(\d+) in \w+, code: ([^\n]*)")  # torch.export's graph annotations
DATA_DEPENDENT_HINT = ("the model branches on a tensor's value; an exported graph must be the same for every "
                       "input: compute both sides and pick with torch.where (or torch.cond), or move the branch "
                       "out of forward")


@dataclass(frozen=True)
class ExportFailure:
    """One format that could not be written, and why (what the report's ``exports`` section shows)."""

    format: str
    error: str  # the converter's message, bounded (the full text is in logs/<format>.log)
    op: str | None = None
    modules: tuple[str, ...] = ()
    hint: str = "see the converter log in logs/"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the report."""
        return {"status": "failed", **asdict(self), "modules": list(self.modules)}

    @property
    def summary(self) -> str:
        """One line: format, op, where."""
        where = f" in {', '.join(self.modules[:3])}" if self.modules else ""
        op = f" at {self.op}{where}" if self.op else ""
        return f"{self.format}: conversion failed{op}: {self.hint}"


def diagnose(fmt: str, message: str, model: Any = None, example: Any = None) -> ExportFailure:
    """The failure record of ``message``; with ``model`` and ``example``, the modules that call an aten op."""
    dependency = NEEDS.search(message)
    if dependency:
        return ExportFailure(fmt, message, hint=f"converted from the {dependency.group(1)} artifact, whose export "
                                                "failed: fix that format first")
    # A converter's message may cut torch.export's reason short, or name no line of the user's: torch.export's
    # own message (asked for once) has both.
    own = message
    if model is not None and "torch.export" in message and not DATA_DEPENDENT.search(message):
        own = export_error(model, example)
    if DATA_DEPENDENT.search(own):
        site = user_frame(own)
        if site is None and own is message and model is not None:
            site = user_frame(export_error(model, example))
        return ExportFailure(fmt, message, "data-dependent control flow", (site,) if site else (),
                             DATA_DEPENDENT_HINT)
    for pattern, hint in KNOWN:
        m = pattern.search(message)
        if m:
            op = m.group(1).replace("::", ".")
            modules = modules_calling(model, example, op) if model is not None and op.startswith("aten") else ()
            return ExportFailure(fmt, message, op, modules, hint)
    return ExportFailure(fmt, message)


def user_frame(text: str) -> str | None:
    """The first ``file:line (code)`` of torch.export's annotations that is the user's code, not torch's."""
    for m in FRAME.finditer(text):
        if "site-packages" not in m.group(1) and "/torch/" not in m.group(1):
            return f"{m.group(1)}:{m.group(2)} ({m.group(3).strip()})"
    return None


def export_error(model: Any, example: Any) -> str:
    """torch.export's own message for ``model`` (a converter's may be cut short); empty when it exports.

    The user's frames of the traceback (non-strict export runs their forward) come first in torch's ``File:`` form,
    innermost first, so ``user_frame`` finds the line that failed even when the message names none.
    """
    import traceback

    import torch

    try:
        torch.export.export(model, (example,))
    except Exception as e:  # the message is what we came for
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if f.filename != __file__ and "site-packages" not in f.filename and "/torch/" not in f.filename]
        return "\n".join([*(f"File: {f.filename}:{f.lineno} in {f.name}, code: {f.line}" for f in frames[::-1]),
                          str(e)])
    return ""


def modules_calling(model: Any, example: Any, op: str) -> tuple[str, ...]:
    """The module paths whose forward calls aten ``op`` (``aten.bucketize.Tensor`` or ``aten.bucketize``).

    Best effort: a model torch.export cannot capture gives no names (the failure itself is still reported).
    """
    import torch

    from edgeship.core.graph import node_module

    try:
        graph = torch.export.export(model, (example,)).graph
    except Exception:  # the converter's failure is the news; not finding its module is not a second error
        return ()
    wanted = op.removeprefix("aten.")
    found: list[str] = []
    for node in graph.nodes:
        target = str(node.target).removeprefix("aten.")
        if node.op == "call_function" and (target == wanted or target.split(".")[0] == wanted.split(".")[0]):
            name = node_module(node) or "(top level)"
            if name not in found:
                found.append(name)
    return tuple(found)
