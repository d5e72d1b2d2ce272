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

from edgeship.core.io import sha256_file


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
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # first writer wins; others read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def sign_digest(digest: str) -> str:
    """The signature of a file whose sha256 is ``digest``: HMAC-SHA256 of it under this machine's key (hex).

    Signing the digest rather than the bytes lets a caller that hashed a file already sign it without reading
    it a second time.
    """
    return hmac.new(_key(key_file()), digest.encode(), hashlib.sha256).hexdigest()


def signed(digest: str, signature: str | None) -> bool:
    """True when ``signature`` is this machine's signature of ``digest`` (constant-time comparison)."""
    return signature is not None and hmac.compare_digest(sign_digest(digest), signature)


def sign_file(path: str | os.PathLike[str]) -> str:
    """The signature of the file at ``path``."""
    return sign_digest(sha256_file(path))


def signed_by_us(path: str | os.PathLike[str], signature: str | None) -> bool:
    """True when ``path`` exists and carries ``signature``."""
    return Path(path).is_file() and signed(sha256_file(path), signature)
