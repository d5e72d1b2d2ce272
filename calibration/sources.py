"""Data sources: real images (digits, ImageFolder, .npz) or seeded noise (smoke runs only).

Every source returns a ``RawData``: float32 images in [0, 1], NCHW, at their native size, with labels
when the source has them. Preprocessing to the model's ``InputSpec`` happens in ``preprocess.py``.
Sources are listed explicitly in ``SOURCES``; a spec string is ``name`` or ``name:argument``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.core.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class RawData:
    """Images in [0, 1] (N, C, H, W) float32, optional int64 labels, and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    origin: str
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _digits(arg: str | None, sample_shape: tuple[int, ...], seed: int, count: int) -> RawData:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: real data, no download

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return RawData(x=x, y=d.target.astype(np.int64), origin="sklearn.datasets.load_digits (8x8, 1797 samples)",
                   class_names=[str(i) for i in range(10)])


def _npz(arg: str | None, sample_shape: tuple[int, ...], seed: int, count: int) -> RawData:
    if not arg:
        raise DataError("data source 'npz:<file>' needs a file path, e.g. npz:data/val.npz")
    path = Path(arg)
    if not path.is_file():
        raise DataError(f"data source npz: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{path}: expected an array named 'x' (and optionally 'y'); found {sorted(z.files)}")
            x = np.asarray(z["x"])
            y = np.asarray(z["y"]) if "y" in z.files else None
    except DataError:
        raise
    except Exception as e:  # zip/format errors: name the file, not numpy's internals
        raise DataError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from e
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: 'x' must be (N, C, H, W), (N, H, W, C) or (N, H, W); got shape {x.shape}")
    # Channels-last arrays are common (PIL, TF); recognise them by a trailing 1/3/4 that is not also leading.
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = np.transpose(x, (0, 3, 1, 2))
    x = _unit_range(x, path)
    if y is not None:
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{path}: 'y' has {y.shape[0]} labels but 'x' has {x.shape[0]} samples")
        y = y.astype(np.int64).reshape(-1)
    return RawData(x=np.ascontiguousarray(x), y=y, origin=f"npz:{path}")


def _unit_range(x: np.ndarray, path: Path) -> np.ndarray:
    """``x`` as float32 in [0, 1]: 8-bit integers are divided by 255; anything else must already be in range."""
    if x.shape[0] and x.size == 0:
        raise DataError(f"{path}: 'x' holds {x.shape[0]} images of no pixels (shape {x.shape})")
    if x.size == 0:
        return x.astype(np.float32)  # no samples: load_source says the source is empty
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) or x.dtype == np.bool_:
        raise DataError(f"{path}: 'x' has dtype {x.dtype}; expected uint8 pixels (0..255) or floats in [0, 1]")
    finite = x[np.isfinite(x)] if np.issubdtype(x.dtype, np.floating) else x  # NaN/Inf: load_source names them
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if np.issubdtype(x.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: 'x' is {x.dtype} with values {lo:g}..{hi:g}; expected 8-bit pixels "
                            "(0..255) or floats in [0, 1]")
        return x.astype(np.float32) / 255.0
    if lo < -1e-6 or hi > 1 + 1e-6:
        hint = " (8-bit pixels stored as floats? divide by 255)" if hi <= 255 else ""
        raise DataError(f"{path}: 'x' holds floats in [{lo:g}, {hi:g}]; expected images scaled to [0, 1]{hint}")
    return x.astype(np.float32)


def _imagefolder(arg: str | None, sample_shape: tuple[int, ...], seed: int, count: int) -> RawData:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    if not arg:
        raise DataError("data source 'imagefolder:<dir>' needs a directory with one sub-directory per class")
    root = Path(arg)
    if not root.is_dir():
        raise DataError(f"data source imagefolder: directory not found: {root}")
    channels, height, width = sample_shape

    def load(path: str) -> np.ndarray:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except Exception as e:
            raise DataError(f"{path}: not a readable image ({e})") from e
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    try:
        folder = ImageFolder(str(root), loader=load, allow_empty=True,
                             is_valid_file=lambda p: Path(p).suffix.lower() in IMAGE_SUFFIXES)
    except FileNotFoundError:
        raise DataError(f"{root}: expected one sub-directory per class (ImageFolder layout); found none") from None
    if not len(folder):
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under the class directories")
    xs, ys = zip(*(folder[i] for i in range(len(folder))), strict=True)
    return RawData(x=np.stack(xs), y=np.asarray(ys, dtype=np.int64), origin=f"imagefolder:{root}",
                   class_names=folder.classes)


def _synthetic(arg: str | None, sample_shape: tuple[int, ...], seed: int, count: int) -> RawData:
    rng = np.random.default_rng(seed)
    n = int(arg) if arg else max(count, 1)
    x = rng.random((n, *sample_shape), dtype=np.float32)
    return RawData(x=x, y=None, origin=f"synthetic (seeded uniform noise, seed {seed}; smoke runs only)")


SourceFn = Callable[[str | None, tuple[int, ...], int, int], RawData]

SOURCES: dict[str, SourceFn] = {
    "digits": _digits,
    "imagefolder": _imagefolder,
    "npz": _npz,
    "synthetic": _synthetic,
}


def load_source(spec: str, sample_shape: tuple[int, ...], seed: int, count: int = 0) -> RawData:
    """Load the data source named by ``spec`` (``digits``, ``npz:file``, ``imagefolder:dir``, ``synthetic``).

    Raises ``DataError`` for unknown names, unreadable files, an empty source, or non-finite values.
    """
    name, _, arg = spec.partition(":")
    if name not in SOURCES:
        raise DataError(f"unknown data source {spec!r}; valid sources: {', '.join(SOURCES)} "
                        "(with an argument where needed, e.g. npz:path/to/file.npz)")
    data = SOURCES[name](arg or None, sample_shape, seed, count)
    if len(data) == 0:
        raise DataError(f"data source {spec!r} is empty: it holds 0 samples")
    bad = ~np.isfinite(data.x)
    if bad.any():
        n_bad = int(bad.reshape(len(data), -1).any(axis=1).sum())
        raise DataError(f"data source {spec!r}: {n_bad} sample(s) contain NaN or Inf")
    return data
