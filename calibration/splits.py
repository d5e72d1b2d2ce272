"""Deterministic train / calibration / validation splits from the recipe's data sources."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeship.calibration.preprocess import preprocess
from edgeship.calibration.sources import RawData, load_source
from edgeship.core.errors import DataError


@dataclass
class Dataset:
    """Preprocessed inputs (exactly what the model sees) and optional labels."""

    x: np.ndarray
    y: np.ndarray | None
    origin: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def fingerprint(self) -> str:
        """Content hash: stage caches and reports name the exact data they used."""
        h = hashlib.sha256(np.ascontiguousarray(self.x).tobytes())
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()[:16]


@dataclass
class Splits:
    """The three disjoint splits a run uses. ``train`` is everything of the calibration source not held out."""

    train: Dataset
    calibration: Dataset
    validation: Dataset
    notes: list[str]


def _take(raw: RawData, idx: np.ndarray, sample_shape: Sequence[int], mean: Sequence[float],
          std: Sequence[float], label: str) -> Dataset:
    x = preprocess(raw.x[idx], sample_shape, mean, std)
    y = raw.y[idx] if raw.y is not None else None
    return Dataset(x=x, y=y, origin=f"{raw.origin} [{label}: {len(idx)} samples]")


def make_splits(calibration_source: str, validation_source: str, calibration_samples: int,
                validation_samples: int, seed: int, sample_shape: Sequence[int], mean: Sequence[float],
                std: Sequence[float], allow_fewer: bool = False) -> Splits:
    """Load sources and cut seeded splits; validation never overlaps calibration/training data.

    When both splits name the same source, the validation split is held out first (``validation_samples``
    of a seeded permutation) and calibration/training draw only from the rest. Asking for more samples
    than exist is an error (a split silently shrunk to one sample proves nothing), or with ``allow_fewer`` a
    note in ``notes`` for the report.
    """
    notes: list[str] = []
    shape = tuple(int(s) for s in sample_shape)
    rng = np.random.default_rng(seed)
    same = calibration_source == validation_source
    # A generated source (synthetic) makes as many samples as asked: both splits' worth when they share it.
    val_raw = load_source(validation_source, shape, seed, validation_samples + (calibration_samples if same else 0))
    cal_raw = val_raw if same else load_source(calibration_source, shape, seed + 1, calibration_samples)

    val_perm = rng.permutation(len(val_raw))
    n_val = min(validation_samples, len(val_raw) - (1 if same else 0))
    if n_val < validation_samples:
        notes.append(f"validation: asked for {validation_samples} samples, source has {n_val} available")
    val_idx = np.sort(val_perm[:n_val])
    pool = np.sort(val_perm[n_val:]) if same else np.arange(len(cal_raw))
    if len(pool) == 0:
        raise DataError(f"calibration source {calibration_source!r} has no samples left after holding out "
                        f"{n_val} for validation; lower data.validation.samples")
    cal_perm = rng.permutation(pool)
    n_cal = min(calibration_samples, len(cal_perm))
    if n_cal < calibration_samples:
        notes.append(f"calibration: asked for {calibration_samples} samples, source has {n_cal} available")
    if notes and not allow_fewer:
        raise DataError("; ".join(notes) + " (lower data.validation.samples / data.calibration.samples, or set "
                        "data.allow_fewer_samples: true to run on what there is)")
    for n in notes:
        warnings.warn(n, stacklevel=2)
    return Splits(
        train=_take(cal_raw, np.sort(cal_perm), shape, mean, std, "train"),
        calibration=_take(cal_raw, np.sort(cal_perm[:n_cal]), shape, mean, std, "calibration"),
        validation=_take(val_raw, val_idx, shape, mean, std, "validation"),
        notes=notes,
    )
