"""Error taxonomy: every user-facing failure is an ``EdgeshipError`` carrying its documented exit code.

Exit codes (README.md, docs/design.md): 0 ok · 1 internal error · 2 bad recipe/arguments · 3 unsupported ops ·
4 validation gate failed · 5 corrupt or untrusted input · 130 interrupted · 143 terminated.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_UNSUPPORTED = 3
EXIT_GATE = 4
EXIT_CORRUPT = 5
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM), e.g. a cancelled CI job


class EdgeshipError(Exception):
    """Root of all errors the CLI reports without a traceback."""

    exit_code = EXIT_INTERNAL


class ConfigError(EdgeshipError):
    """The recipe or a command-line argument is wrong (names the field and what was expected)."""

    exit_code = EXIT_CONFIG


class DataError(ConfigError):
    """A data source is missing, empty or holds values the pipeline cannot use."""


class CheckpointError(EdgeshipError):
    """A weights file is corrupt, untrusted, or does not fit the model architecture."""

    exit_code = EXIT_CORRUPT


class ArtifactError(EdgeshipError):
    """An exported artifact is missing, corrupt, or does not match its manifest entry."""

    exit_code = EXIT_CORRUPT


class ExportError(EdgeshipError):
    """A converter failed on this model (the message names the format and the converter's reason)."""

    exit_code = EXIT_UNSUPPORTED


class RuntimeUnavailableError(EdgeshipError):
    """An optional runtime or converter package is not installed."""

    exit_code = EXIT_CONFIG


class GateFailure(EdgeshipError):
    """At least one validation gate failed; the report says which and by how much."""

    exit_code = EXIT_GATE


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour/cursor codes torch and converters print


def plain(text: str, lines: int, width: int = 300) -> str:
    """A library's message for ours: no terminal codes, at most ``lines`` lines of at most ``width`` characters."""
    kept = [line[:width] for line in ANSI.sub("", text).splitlines() if line.strip()]
    return "\n".join(kept[:lines] + ([f"... ({len(kept) - lines} more lines)"] if len(kept) > lines else []))
