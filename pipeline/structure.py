"""Save and restore a model whose layer shapes changed (pruning) without pickling code objects.

A JSON record holds every module's integer (and integer-tuple) attributes — channel counts, groups, feature
sizes, head counts — and a safetensors file holds the tensors. Restoring resizes the parameters and buffers of
a freshly built, unpruned model to the saved shapes, sets the attributes, and loads the tensors strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, tuple | list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return {"tuple": list(value)} if isinstance(value, tuple) else list(value)
    return None


def structure_record(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Integer attributes of every module (what pruning changes), keyed by module name."""
    record: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {}
        for key, value in vars(module).items():
            if key.startswith("_") or key == "training":
                continue
            j = _jsonable(value)
            if j is not None:
                attrs[key] = j
        record[name] = attrs
    return record


def save_structured(model: nn.Module, tensors_path: Path, record_path: Path) -> None:
    """Write the tensors (safetensors) and the structure record (JSON) of ``model``."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(tensors_path))
    record_path.write_text(json.dumps(structure_record(model), indent=1, sort_keys=True))


def load_structured(model: nn.Module, tensors_path: Path, record_path: Path) -> nn.Module:
    """Reshape the unpruned ``model`` to the saved structure and load the saved tensors strictly."""
    from safetensors.torch import load_file

    tensors = load_file(str(tensors_path))
    record = json.loads(record_path.read_text())
    modules = dict(model.named_modules())
    for full_name, tensor in tensors.items():
        owner, _, leaf = full_name.rpartition(".")
        module = modules[owner]
        if leaf in module._parameters and module._parameters[leaf] is not None:  # noqa: SLF001
            old = module._parameters[leaf]  # noqa: SLF001
            module._parameters[leaf] = nn.Parameter(torch.empty_like(tensor), requires_grad=old.requires_grad)  # noqa: SLF001
        elif leaf in module._buffers and module._buffers[leaf] is not None:  # noqa: SLF001
            module._buffers[leaf] = torch.empty_like(tensor)  # noqa: SLF001
    for name, attrs in record.items():
        module = modules.get(name)
        if module is None:
            continue
        for key, value in attrs.items():
            setattr(module, key, tuple(value["tuple"]) if isinstance(value, dict) else value)
    model.load_state_dict(tensors, strict=True)
    return model.eval()
