"""Signatures for the files a run reuses (stage outputs on ``--resume``, training checkpoints).

A sha256 in ``manifest.json`` detects corruption, but whoever can replace a stage file can rewrite the manifest
too. An HMAC keyed with a secret kept outside the run directory (``~/.config/edgeship/run-key``, mode 0600, made
on first use; ``EDGESHIP_KEY_FILE`` moves it) cannot be rewritten that way: a file edgeship did not write on this
machine is never reused, only recomputed. A run directory moved to another machine is recomputed there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import cache
from pathlib import Path


def key_file() -> Path:
    """Where the signing key lives."""
    if os.environ.get("EDGESHIP_KEY_FILE"):
        return Path(os.environ["EDGESHIP_KEY_FILE"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "edgeship" / "run-key"


@cache
def _key(path: Path) -> bytes:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(f".{os.getpid()}.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(path.with_suffix(f".{os.getpid()}.tmp"), path)  # first writer wins; others read its key
        except FileExistsError:
            pass
        finally:
            path.with_suffix(f".{os.getpid()}.tmp").unlink(missing_ok=True)
    return path.read_bytes()


def sign_file(path: str | os.PathLike[str]) -> str:
    """The HMAC-SHA256 of a file's bytes under this machine's key (hex)."""
    mac = hmac.new(_key(key_file()), digestmod=hashlib.sha256)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            mac.update(block)
    return mac.hexdigest()


def signed_by_us(path: str | os.PathLike[str], signature: str | None) -> bool:
    """True when ``path`` exists and carries ``signature`` (constant-time comparison)."""
    return signature is not None and Path(path).is_file() and hmac.compare_digest(sign_file(path), signature)
