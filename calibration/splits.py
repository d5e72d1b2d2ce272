"""Deterministic train / calibration / validation splits from the recipe's data sources."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeship.calibration.preprocess import preprocess, to_pixels
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
    control: Dataset | None = None  # data.control_samples rows no other split (not even train) holds
    uncalibrated: np.ndarray | None = None  # indices into ``train`` of rows calibration did not use

    def as_pixels(self, mean: Sequence[float], std: Sequence[float]) -> Splits:
        """Every split as [0, 1] pixels on the 8-bit grid (inputs of a pixel-input model), labels unchanged."""
        def px(d: Dataset | None) -> Dataset | None:
            return None if d is None else Dataset(to_pixels(d.x, mean, std), d.y, f"{d.origin}, as 8-bit pixels")

        return dataclasses.replace(self, train=px(self.train), calibration=px(self.calibration),
                                   validation=px(self.validation), control=px(self.control))

    def held_out_rows(self, limit: int) -> tuple[Dataset, bool]:
        """Up to ``limit`` rows accuracy control measures on, never the validation split, and whether train has them.

        The control split when there is one; else train rows calibration did not use, which a ``train`` stage
        has fitted (agreement there is optimistic: confident rows rarely flip).
        """
        if self.control is not None and len(self.control):
            return Dataset(self.control.x[:limit], None if self.control.y is None else self.control.y[:limit],
                           self.control.origin), False
        idx = np.arange(0) if self.uncalibrated is None else self.uncalibrated[:limit]
        y = self.train.y[idx] if self.train.y is not None else None
        return Dataset(x=self.train.x[idx], y=y, origin=f"{self.train.origin}, not used by calibration"), True


def _take(raw: RawData, idx: np.ndarray, sample_shape: Sequence[int], mean: Sequence[float],
          std: Sequence[float], label: str) -> Dataset:
    x = preprocess(raw.x[idx], sample_shape, mean, std)
    y = raw.y[idx] if raw.y is not None else None
    return Dataset(x=x, y=y, origin=f"{raw.origin} [{label}: {len(idx)} samples]")


def make_splits(calibration_source: str, validation_source: str, calibration_samples: int,
                validation_samples: int, seed: int, sample_shape: Sequence[int], mean: Sequence[float],
                std: Sequence[float], allow_fewer: bool = False, control_samples: int = 0) -> Splits:
    """Load sources and cut seeded splits; validation never overlaps calibration/training data.

    ``control_samples`` rows of the calibration source go to a control split that neither training nor
    calibration sees (accuracy control measures there; the other splits are unchanged but for train).

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
    # Control rows come off the end of the permutation: the calibration rows (its start) stay the same.
    n_control = min(control_samples, max(len(cal_perm) - 1, 0))
    control_idx, cal_perm = cal_perm[len(cal_perm) - n_control:], cal_perm[:len(cal_perm) - n_control]
    if n_control < control_samples:
        notes.append(f"control: asked for {control_samples} samples, source has {n_control} available")
    n_cal = min(calibration_samples, len(cal_perm))
    if n_cal < calibration_samples:
        notes.append(f"calibration: asked for {calibration_samples} samples, source has {n_cal} available")
    if notes and not allow_fewer:
        raise DataError("; ".join(notes) + " (lower data.validation.samples / data.calibration.samples, or set "
                        "data.allow_fewer_samples: true to run on what there is)")
    for n in notes:
        warnings.warn(n, stacklevel=2)
    train_idx = np.sort(cal_perm)
    return Splits(
        train=_take(cal_raw, train_idx, shape, mean, std, "train"),
        calibration=_take(cal_raw, np.sort(cal_perm[:n_cal]), shape, mean, std, "calibration"),
        validation=_take(val_raw, val_idx, shape, mean, std, "validation"),
        notes=notes,
        control=_take(cal_raw, np.sort(control_idx), shape, mean, std, "control") if n_control else None,
        uncalibrated=np.flatnonzero(~np.isin(train_idx, cal_perm[:n_cal])),
    )
