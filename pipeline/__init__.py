"""edgeship: PyTorch model -> hardware-friendly model -> validated, profiled ONNX / TFLite / OpenVINO artifacts.

The public API (``edgeship.run``, ``edgeship.check``, ``edgeship.debug``, ``edgeship.latency_table``,
``edgeship.load_recipe``) lives in ``edgeship.api``; the names here load it on first use, so ``import edgeship``
imports neither torch nor any runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeship.core.errors import EdgeshipError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgeship.api import RunResult, check, debug, latency_table, load_recipe, run
    from edgeship.recipe import Recipe

_LAZY = {"run": "edgeship.api", "check": "edgeship.api", "debug": "edgeship.api", "load_recipe": "edgeship.api",
         "latency_table": "edgeship.api", "RunResult": "edgeship.api", "Recipe": "edgeship.recipe"}

__all__ = ["EdgeshipError", "Recipe", "RunResult", "__version__", "check", "debug", "latency_table", "load_recipe",
           "run"]


def __getattr__(name: str) -> Any:
    """Import the public API on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'edgeship' has no attribute {name!r}"
    raise AttributeError(msg)
