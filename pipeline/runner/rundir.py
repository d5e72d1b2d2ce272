"""The run directory: created and proven writable up front, its ``manifest.json``, and the stage cache keys.

Every file is written atomically and recorded with its sha256 in the manifest; ``--resume`` reuses a stage only
when its cache key (stage config, input model, data, seed, versions) and its files' hashes match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from edgeship.core.environment import library_versions
from edgeship.core.errors import ConfigError
from edgeship.core.io import atomic_write_json, clean_stale_temporaries, sha256_file
from edgeship.core.signing import signed
from edgeship.recipe import Recipe
from edgeship.training.trainer import is_main_process

SCHEMA_VERSION = 2  # 2: result rows name their runtime under "runtime" (was "target")


def prepare_run_dir(recipe: Recipe, out: str | Path | None) -> Path:
    """Create the run directory and prove it is writable before any work starts."""
    run_dir = Path(out) if out else Path(recipe.output_dir) / recipe.name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory {run_dir} is not writable ({e.strerror or e}); "
                          f"choose another with --out or output_dir") from None
    return run_dir


LOCK_FILE = ".edgeship.lock"
OWNED = ("artifacts", "stages", "logs")  # the sub-folders a run writes (and may clean) in full


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for this run alone, then clear the temporaries a crashed run left in it.

    A second run into the same directory exits 2 naming the holder's PID (two runs deleted each other's
    temporaries). Under torchrun only rank 0 writes, so only rank 0 locks.
    """
    if not is_main_process():
        yield
        return
    import fcntl

    path = run_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ConfigError(f"run directory {run_dir} is in use by another edgeship run (PID {holder}); wait for "
                              "it to finish or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        clean_stale_temporaries([run_dir], recursive=False)
        clean_stale_temporaries(run_dir / sub for sub in OWNED)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Manifest:
    """``manifest.json``: stage status, every file's sha256, versions and seed; rewritten atomically."""

    def __init__(self, run_dir: Path, recipe: Recipe) -> None:
        self.path = run_dir / "manifest.json"
        self.run_dir = run_dir
        previous: dict[str, Any] = {}
        if self.path.is_file():
            try:
                previous = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                previous = {}
        self.previous_stages = {s["key"]: s for s in previous.get("stages", []) if s.get("status") == "done"}
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "name": recipe.name, "seed": recipe.seed,
            "started": now(), "status": "running",
            "versions": library_versions(), "stages": [], "artifacts": {}, "files": {},
        }

    def record_file(self, path: Path) -> str:
        """Hash ``path`` and record it (relative to the run dir)."""
        digest = sha256_file(path)
        self.data["files"][str(path.relative_to(self.run_dir))] = digest
        return digest

    def reusable(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """The previous run's entry for a stage with cache ``key``, or None and why it cannot be reused.

        Every file it lists must hash as recorded and carry this machine's signature (``core/signing.py``): a
        file replaced together with a rewritten manifest is recomputed, never loaded.
        """
        entry = self.previous_stages.get(key)
        if entry is None:
            return None, None
        signatures = entry.get("signatures", {})
        for rel, digest in entry.get("files", {}).items():
            path = self.run_dir / rel
            if not path.is_file() or sha256_file(path) != digest:
                return None, f"{rel} is missing or changed since it was written"
            if not signed(digest, signatures.get(rel)):
                return None, f"{rel} does not carry this machine's signature (written elsewhere or replaced)"
        return entry, None

    def save(self, status: str | None = None) -> None:
        """Rewrite the manifest atomically (rank 0 only under torchrun)."""
        if not is_main_process():
            return
        if status:
            self.data["status"] = status
            self.data["finished"] = now()
        atomic_write_json(self.path, self.data)


def now() -> str:
    """The current UTC time, to the second, as ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def hash_json(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (the stage cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def state_dict_hash(model: torch.nn.Module) -> str:
    """sha256 of a model's tensors and their names (an in-memory model's identity in the cache key)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
