"""Loading ``.pt2`` archives (``torch.export.save``) without running code from them.

``torch.export.load`` unpickles sample inputs, pickled weights and constants, and falls back to unrestricted
unpickling when the restricted loader refuses (a ``__reduce__`` payload then runs). Here every member torch would
unpickle is first loaded with ``torch.load(weights_only=True)`` (tensors and plain containers only), and members
that can only hold Python objects (custom and opaque objects) are refused; only then does ``torch.export.load``
read the very bytes that were checked. edgeship's own archives hold tensors and containers only.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from edgeship.core.errors import CheckpointError, plain

# pt2 archive layout (torch.export.pt2_archive.constants)
CONFIGS = {"data/weights/": "_weights_config.json", "data/constants/": "_constants_config.json"}
OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")  # torchbind / arbitrary Python objects: never tensors
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # a torch.save zip, or a raw pickle (protocol 2+)


def _members_torch_unpickles(archive: zipfile.ZipFile, source: Path) -> list[str]:
    """Every member ``torch.export.load`` would unpickle; raises for members that can hold only objects."""
    names = archive.namelist()
    raw, pickled = set(), set()
    for name in names:
        folder = next((d for d in CONFIGS if f"/{d}" in f"/{name}" and name.endswith(CONFIGS[d])), None)
        if folder is None:
            continue
        root = name[: name.index(folder)]
        try:
            config = json.loads(archive.read(name))["config"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{source}: member {name} is not a valid payload config ({e})") from None
        for fqn, meta in config.items():
            member = f"{root}{folder}{meta.get('path_name', '')}"
            if str(meta.get("path_name", "")).startswith(OBJECT_PREFIXES):
                raise CheckpointError(f"{source}: member {member} (constant {fqn}) is a pickled Python object, "
                                      "which edgeship never loads (refused: only tensors load from a .pt2)")
            (pickled if meta.get("use_pickle") else raw).add(member)
    for name in names:
        if name in raw or name.endswith("/") or name in pickled:
            continue
        with archive.open(name) as f:
            head = f.read(4)
        if name.endswith((".pt", ".pkl", ".pickle")) or head.startswith(PICKLE_MAGIC):
            pickled.add(name)
    return sorted(pickled)


def check_pt2(data: bytes, source: Path) -> None:
    """Raise ``CheckpointError`` unless every member of the archive ``data`` that torch unpickles is tensors only."""
    import torch

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise CheckpointError(f"{source}: not a .pt2 archive (expected the zip file torch.export.save "
                              "writes)") from None
    with archive:
        for name in _members_torch_unpickles(archive, source):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True, map_location="cpu")
            except pickle.UnpicklingError as e:
                raise CheckpointError(f"{source}: member {name} holds pickled Python objects beyond tensors "
                                      f"(refused, nothing of it ran: {plain(str(e), 1, 200)})") from None
            except Exception as e:
                raise CheckpointError(f"{source}: member {name} is not a readable tensor payload "
                                      f"({type(e).__name__}: {plain(str(e), 1, 200)})") from None


def load_exported_program(path: str | Path) -> Any:
    """``torch.export.load`` of ``path``, after ``check_pt2`` passed on the same bytes."""
    import torch

    path = Path(path)
    if not path.is_file():
        from edgeship.core.errors import ConfigError

        raise ConfigError(f"{path}: file not found")
    data = path.read_bytes()
    check_pt2(data, path)
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as e:
        raise CheckpointError(f"{path}: not a loadable torch.export program ({type(e).__name__}: "
                              f"{plain(str(e), 1)})") from None


def output_step(model: Any) -> float:
    """The quantization step of a converted PT2E graph's (first) output: its logits lie on this grid; 0 if none."""
    import torch

    if not isinstance(model, torch.fx.GraphModule):
        return 0.0
    out = next(n for n in model.graph.nodes if n.op == "output")
    first = out.args[0]
    while isinstance(first, list | tuple) and first:
        first = first[0]
    quant = torch.ops.quantized_decomposed
    if isinstance(first, torch.fx.Node) and first.target == quant.dequantize_per_tensor.default:
        scale = first.args[1]
        return float(scale) if isinstance(scale, float | int) else 0.0
    return 0.0
