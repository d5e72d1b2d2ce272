"""Torch helpers every layer uses: eval mode that sticks, the example input, dynamic batch, node -> module names.

torch is imported inside each function so that importing this module stays cheap (``edgeship --help``).
"""

from __future__ import annotations

from typing import Any

from edgeship.core.artifact import InputSpec


def eval_mode(model: Any) -> Any:
    """Put ``model`` in eval mode and return it.

    PT2E graphs' patched ``eval()`` rewrites their dropout/BN ops but returns None and leaves ``training`` set,
    which converters read.
    """
    model.eval()
    for m in model.modules():
        m.training = False
    return model


def example_input(spec: InputSpec) -> Any:
    """A seeded random example input of the spec's static shape (shapes only; values never validated)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.rand(spec.shape, generator=g)


def dynamic_batch_shapes(model: Any, max_batch: int = 1024) -> dict[str, Any]:
    """``torch.export`` dynamic shapes marking dim 0 of the forward's first argument as the batch."""
    import inspect

    import torch

    first = next(iter(inspect.signature(model.forward).parameters))
    return {first: {0: torch.export.Dim("batch", min=1, max=max_batch)}}


def node_module(node: Any) -> str | None:
    """The module path a ``torch.fx`` graph node was traced from (innermost ``nn_module_stack`` entry)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    return list(stack.values())[-1][0]
