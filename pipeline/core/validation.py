"""Strict config models and the one formatter of their validation errors (recipes, stage entries, profiles).

Every message names the field by its dotted path, says what was wrong, and for an unknown key lists the valid
keys at that point (with a close match when there is one).
"""

from __future__ import annotations

import difflib
import reprlib
import types
import typing
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Base for every config section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every model class an annotation can hold (through list, dict, Optional, Union and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (list, dict, typing.Union, types.UnionType, tuple):
        return [m for a in typing.get_args(annotation) for m in _models_in(a)]
    return []


def _tag(model: type[BaseModel]) -> str | None:
    """The discriminator value of a tagged union member (its ``type`` literal), if it has one."""
    field = model.model_fields.get("type")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[type[BaseModel]], list[str], str | None]:
    """(models that may sit at the end of ``loc``, the path shown to the user, the union tag passed through)."""
    candidates, shown, tag = [root], [], None
    for part in loc:
        if isinstance(part, int):
            shown.append(str(part))
            continue
        tagged = [m for m in candidates if _tag(m) == part]
        if tagged and not any(part in (n, f.alias) for m in candidates for n, f in m.model_fields.items()):
            candidates, tag = tagged, part  # a discriminated-union member: not a key the user wrote
            continue
        shown.append(str(part))
        field = next((f for m in candidates for n, f in m.model_fields.items() if part in (n, f.alias)), None)
        candidates = _models_in(field.annotation) if field is not None else []
    return candidates, shown, tag


def format_errors(err: ValidationError, source: str, root: type[BaseModel], what: str = "recipe") -> str:
    """Turn pydantic's error into lines that name the field, what was wrong, and what is valid."""
    lines = [f"{source}: invalid {what}"]
    for e in err.errors():
        loc = tuple(e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            models, shown, tag = _walk(root, loc[:-1])
            valid = _field_names(models[0]) if len(models) == 1 else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = ".".join([*shown, str(loc[-1])])
            scope = f"for {tag}" if tag else "here"
            lines.append(f"  {where}: unknown key{hint}; valid keys {scope}: {', '.join(valid)}")
            continue
        models, shown, _ = _walk(root, loc)
        where = ".".join(shown) or "(top level)"
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            ctx = e.get("ctx", {})
            tags = [t for m in models if (t := _tag(m)) is not None]
            noun = str(shown[-2]).removesuffix("s") if len(shown) > 1 else "entry"
            got = f"unknown {noun} {ctx['tag']!r}" if kind == "union_tag_invalid" else "missing 'type'"
            lines.append(f"  {where}.type: {got}; valid {noun}s: {', '.join(tags) or '(none)'}")
            continue
        got = e.get("input")
        shown_input = "" if isinstance(got, dict) or got is None else f" (got {reprlib.repr(got)})"
        lines.append(f"  {where}: {e['msg'].removeprefix('Value error, ')}{shown_input}")
    return "\n".join(lines)


class DeprecatedKey(UserWarning):
    """A config key was renamed; the old name still works (the recipe loader reports it as a note)."""


def rename_deprecated(data: Any, renames: dict[str, str], section: str) -> Any:
    """``data`` with each old key of ``renames`` under its new name, warning ``DeprecatedKey`` for each one.

    ``section`` is the dotted prefix shown in the message (``""`` at the top level, ``"archify.distill."``).
    """
    if not isinstance(data, dict):
        return data
    for old, new in renames.items():
        if old not in data:
            continue
        if new in data:
            msg = f"{section}{old} is the deprecated name of {section}{new}: give only {new}"
            raise ValueError(msg)
        data = {(new if k == old else k): v for k, v in data.items()}
        warnings.warn(f"{section}{old} is deprecated: the key is now {section}{new} (the old name still works)",
                      DeprecatedKey, stacklevel=2)
    return data


# A recipe or profile is a few KB; these bounds stop a YAML alias bomb before it expands (443 bytes took 4 GB).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """How many values ``node`` becomes once every alias is expanded (each shared node computed once)."""
    import yaml

    if id(node) not in memo:
        if isinstance(node, yaml.SequenceNode):
            memo[id(node)] = 1 + sum(_expanded_size(n, memo) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[id(node)] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            memo[id(node)] = 1
    return memo[id(node)]


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` of ``text``, refusing what is too large, or would be once its aliases are expanded."""
    import yaml

    from edgeship.core.errors import ConfigError

    size = len(text.encode("utf-8"))
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {size} bytes; a recipe or profile is at most {MAX_YAML_BYTES} bytes")
    try:
        loader = yaml.SafeLoader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    try:
        node = loader.get_single_node()  # composed: aliases are shared nodes, nothing is expanded yet
        if node is None:
            return None
        values = _expanded_size(node, {})
        if values > MAX_YAML_VALUES:
            raise ConfigError(f"{source}: expands to {values} values through YAML aliases (at most "
                              f"{MAX_YAML_VALUES}); refused")
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a recipe") from None
    finally:
        loader.dispose()
