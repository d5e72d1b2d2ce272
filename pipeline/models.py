"""Build the model a recipe names and load its weights safely (never unpickling arbitrary code)."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeship.core.errors import CheckpointError, ConfigError, plain

LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # where training checkpoints keep the weights
# Key prefixes that wrappers add and loading strips: Lightning's `model.` attribute, DDP/DataParallel's `module.`,
# torch.compile's `_orig_mod.`. Any other prefix that is the only difference gets a hint, not a guess.
WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.")
TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, or its legacy raw pickle


def _call_factory(factory: Any, num_classes: int, where: str) -> nn.Module:
    params = inspect.signature(factory).parameters
    kwargs = {"num_classes": num_classes} if "num_classes" in params or any(
        p.kind == p.VAR_KEYWORD for p in params.values()) else {}
    try:
        model = factory(**kwargs)
    except SystemExit as e:  # a factory (or argparse inside it) must not end edgeship's process, least of all with 0
        raise ConfigError(f"model.source {where}: the factory called sys.exit({e.code!r}) instead of returning a "
                          "model") from None
    except Exception as e:
        raise ConfigError(f"model.source {where}: the factory raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.source {where}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.source: unknown torchvision model {name!r}{hint} "
                          f"({len(available)} classification models available)")
    # Random init (no hub downloads here); pretrained weights are passed with model.weights.
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _timm(name: str, num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError("model.source timm:<name> needs timm (pip install 'edgeship[timm]')") from None
    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ConfigError(f"model.source: unknown timm model {name!r}" + (f"; did you mean {', '.join(close)}?"
                                                                          if close else ""))
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


@contextmanager
def _importable(folders: Sequence[str | Path]) -> Iterator[None]:
    """``folders`` first on ``sys.path`` while a user's model module is imported (its sibling imports resolve)."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            sys.path.remove(f)


def _from_file(path: Path, factory: str, num_classes: int, source: str) -> nn.Module:
    if not path.is_file():
        raise ConfigError(f"model.source {source}: file not found: {path} (a recipe's relative paths resolve "
                          "against the recipe's folder)")
    mod_name = f"_edgeship_user_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model.source {source}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        with _importable([path.resolve().parent]):
            spec.loader.exec_module(module)
    except SystemExit as e:  # e.g. argparse at import time, parsing edgeship's own command line
        raise ConfigError(f"model.source {source}: importing {path} called sys.exit({e.code!r}); a model file must "
                          "not run code at import (guard it with `if __name__ == '__main__':`)") from None
    except Exception as e:
        raise ConfigError(f"model.source {source}: importing {path} raised {type(e).__name__}: {e}") from e
    if not hasattr(module, factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ConfigError(f"model.source {source}: {path} has no {factory!r}; callables there: {', '.join(names)}")
    return _call_factory(getattr(module, factory), num_classes, source)


def _from_module(module_name: str, factory: str, num_classes: int, source: str,
                 search: Sequence[str | Path]) -> nn.Module:
    try:
        with _importable(search):
            module = importlib.import_module(module_name)
    except ImportError as e:
        where = f" (looked in {', '.join(map(str, search))} and the installed packages)" if search else ""
        raise ConfigError(f"model.source {source}: cannot import module {module_name!r}: {e}{where}") from e
    except SystemExit as e:
        raise ConfigError(f"model.source {source}: importing {module_name!r} called sys.exit({e.code!r})") from None
    if not hasattr(module, factory):
        raise ConfigError(f"model.source {source}: module {module_name!r} has no attribute {factory!r}")
    return _call_factory(getattr(module, factory), num_classes, source)


def build_model(source: str, num_classes: int, search: Sequence[str | Path] = ()) -> nn.Module:
    """Build the model named by ``source`` (see ``ModelConfig.source`` for the accepted forms), in eval mode.

    ``search``: folders looked in first for a ``package.module:factory`` source (the recipe's folder, the cwd).
    """
    if source.endswith(".pt2"):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"model.source: file not found: {path}")
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        from edgeship.core.pt2 import load_exported_program

        # An exported module refuses .eval()/.train() ("not supported yet") unless they are made graph rewrites.
        return allow_exported_model_train_eval(load_exported_program(path).module())
    prefix, sep, rest = source.partition(":")
    if not sep or not rest:
        raise ConfigError(f"model.source: expected torchvision:<name>, timm:<name>, path/file.py:factory, "
                          f"package.module:factory or a .pt2 file; got {source!r}")
    if prefix == "torchvision":
        model = _torchvision(rest, num_classes)
    elif prefix == "timm":
        model = _timm(rest, num_classes)
    elif prefix.endswith(".py"):
        model = _from_file(Path(prefix), rest, num_classes, source)
    else:
        model = _from_module(prefix, rest, num_classes, source, search)
    return model.eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a ``.pt/.pth/.bin`` file with ``weights_only=True``.

    Never falls back to unrestricted unpickling. Accepts a bare state_dict or one nested under one of
    ``WRAPPER_KEYS`` (training checkpoints: Lightning's ``state_dict``, a loop's ``model_state_dict`` or ``model``).
    """
    if not path.is_file():
        raise ConfigError(f"model.weights: file not found: {path}")
    head = path.open("rb").read(64)
    if not head:
        raise CheckpointError(f"{path}: weights file is empty (0 bytes)")
    if head.startswith(LFS_POINTER):
        raise CheckpointError(f"{path}: this is a Git LFS pointer, not the weights; run `git lfs pull`")
    # The content decides, not the suffix: a safetensors file named .pt is still safetensors.
    safetensors = len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27)
    if path.suffix == ".safetensors" or safetensors:
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: corrupt safetensors file ({type(e).__name__}: {e})") from e
    elif not head.startswith(TORCH_SAVE_MAGIC):
        raise CheckpointError(f"{path}: not a PyTorch weights file (it starts with {head[:16]!r}); expected a "
                              "torch.save state_dict (.pt/.pth) or a .safetensors file")
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            reason = plain(str(e), 1) or type(e).__name__
            if "weights_only" in str(e) or "Unsupported global" in str(e):
                reason = ("it contains pickled Python objects beyond tensors (refused: weights_only=True); "
                          "save model.state_dict() instead. " + reason)
            else:
                reason = f"truncated or corrupt ({path.stat().st_size} bytes; {reason})"
            raise CheckpointError(f"{path}: not a loadable weights file: {reason}") from e
    if isinstance(sd, dict):
        for key in WRAPPER_KEYS:
            if key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of names to tensors); got {type(sd).__name__}")
    broken = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        shown = ", ".join(broken[:8]) + (f", ... ({len(broken)} in all)" if len(broken) > 8 else "")
        raise CheckpointError(f"{path}: NaN or Inf values in {shown}: these weights cannot give finite logits")
    return sd


def load_weights(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model`` strictly; a mismatch lists missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    sd = _unprefixed(read_state_dict(path), set(own))
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:

        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")

        parts = [f"{path}: weights do not match the model architecture"]
        hint = _prefix_hint(set(sd), set(own))
        if hint:
            parts.append(f"  hint: {hint}")
        if missing:
            parts.append(f"  missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"  shape mismatches: {show(shapes)}")
        raise CheckpointError("\n".join(parts))
    if getattr(sd, "_metadata", None) is None:
        # safetensors (and plain dicts) carry no module versions; modules that check theirs on load (torchvision's
        # MNASNet: "version should be set to 1 or 2 instead of None") get the model's own.
        sd = OrderedDict(sd)
        sd._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(sd, strict=True)


def _unprefixed(sd: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """``sd`` without the wrapper prefixes (``WRAPPER_PREFIXES``, nested too) its keys carry and the model's lack."""
    while sd and set(sd) != own:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            break
        sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    return sd


def _prefix_hint(keys: set[str], own: set[str]) -> str | None:
    """When the file's keys and the model's differ only by a prefix, name it and the side that carries it."""
    for have, want, side in ((keys, own, "the file"), (own, keys, "the model")):
        first = min(have, default="")
        for key in want:
            prefix = first[: -len(key)] if first != key and first.endswith(key) else ""
            if prefix and all(k.startswith(prefix) for k in have) and {k.removeprefix(prefix) for k in have} == want:
                return (f"every key of {side} starts with {prefix!r} and the keys match without it: save the "
                        f"inner module's state_dict (or strip {prefix!r} from the keys)")
    return None
