"""Atomic file writes and hashing: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Every temporary edgeship creates starts with this; nothing else is ever cleaned up.
TMP_PREFIX = ".edgeship-tmp-"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike[str]) -> str:
    """Hash a file, or every file under a directory (relative names included), in a stable order."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f.relative_to(p).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename itself durable; not every filesystem supports it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    Works for files and for directories (e.g. an OpenVINO ``.xml``+``.bin`` pair): the caller writes
    whatever it wants at the yielded path. On an exception the temporary is removed and ``path`` is
    left exactly as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=target.parent)) / target.name
    try:
        yield tmp
        if not tmp.exists():
            msg = f"internal: nothing was written for {target}"
            raise FileNotFoundError(msg)
        if tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        with deferred_signals():  # Ctrl-C or SIGTERM now would leave the temporary behind
            shutil.rmtree(tmp.parent, ignore_errors=True)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done (they are delivered right after it), on the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(obj: Any) -> Any:
    """``obj`` with every NaN/Inf float as None: bare ``NaN`` is not JSON, and a reader would choke on it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON atomically (non-finite numbers become null)."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


def clean_stale_temporaries(directories: Iterable[str | os.PathLike[str]], recursive: bool = True) -> int:
    """Remove temporaries ``atomic_path`` left behind (a crashed writer) in ``directories``; return how many.

    Only names edgeship owns (``.edgeship-tmp-*``) are touched, never anything else a user keeps there. Call it
    only while holding the run directory's lock: then no other writer can have one in flight.
    """
    stale = []
    for d in map(Path, directories):
        if d.is_dir():
            stale += [p for p in (d.rglob(f"{TMP_PREFIX}*") if recursive else d.glob(f"{TMP_PREFIX}*")) if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


@contextlib.contextmanager
def captured_output(log_path: Path) -> Iterator[None]:
    """Send everything written to fd 1 and 2 (Python *and* C++ converters) to ``log_path``.

    litert-torch, torch.onnx and OpenVINO print progress and MLIR diagnostics from native code; the user
    sees one line per export instead, and the log keeps the detail for a bug report.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        USER_STDERR.append(saved[1])
        try:
            yield
        finally:
            USER_STDERR.pop()
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# The stderr the user saw before each (nested) captured_output: progress lines written while a converter's chatter
# goes to logs/ (a heartbeat) still reach the user through the outermost one.
USER_STDERR: list[int] = []


def ensure_free_space(folder: str | os.PathLike[str], needed: int, what: str) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``folder`` when it has less than ``needed`` bytes free.

    Some converters write from native code and kill the process on a full disk (litert-torch: an LLVM
    "IO failure", a half-written file and no message); checked first, the run reports it and cleans up.
    """
    import errno

    target = Path(folder)
    while not target.exists() and target != target.parent:
        target = target.parent
    free = shutil.disk_usage(target).free
    if free < needed:
        msg = f"{what} needs about {needed / 1e6:.1f} MB; {free / 1e6:.1f} MB free"
        raise OSError(errno.ENOSPC, msg, str(folder))
