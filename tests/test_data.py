"""Data sources and splits: real digits, npz, ImageFolder, synthetic; deterministic and disjoint."""

import numpy as np
import pytest

from edgeship.calibration.preprocess import preprocess
from edgeship.calibration.sources import load_source
from edgeship.calibration.splits import make_splits
from edgeship.core.errors import DataError

SHAPE = (1, 16, 16)


def test_digits_is_real_labelled_data():
    d = load_source("digits", SHAPE, 0)
    assert d.x.shape == (1797, 1, 8, 8) and d.y is not None and set(np.unique(d.y)) == set(range(10))
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0


def test_splits_are_deterministic_and_disjoint():
    a = make_splits("digits", "digits", 100, 200, 0, SHAPE, [0.5], [0.5])
    b = make_splits("digits", "digits", 100, 200, 0, SHAPE, [0.5], [0.5])
    c = make_splits("digits", "digits", 100, 200, 1, SHAPE, [0.5], [0.5])
    assert a.validation.fingerprint() == b.validation.fingerprint() != c.validation.fingerprint()
    assert len(a.validation) == 200 and len(a.calibration) == 100 and len(a.train) == 1597
    val = {r.tobytes() for r in a.validation.x}
    assert not any(r.tobytes() in val for r in a.train.x[:500] if not np.allclose(r, r.mean()))


def test_preprocess_resizes_repeats_channels_and_normalises():
    x = np.full((2, 1, 8, 8), 0.75, dtype=np.float32)
    y = preprocess(x, (3, 32, 24), [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert y.shape == (2, 3, 32, 24) and y.dtype == np.float32
    assert np.allclose(y, 1.0, atol=1e-5)


def test_npz_source_channels_last_uint8(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 10, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    d = load_source(f"npz:{tmp_path / 'd.npz'}", (3, 10, 12), 0)
    assert d.x.shape == (5, 3, 10, 12) and d.x.max() <= 1.0 and list(d.y) == [0, 1, 2, 3, 4]


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "noX.npz", images=np.zeros((2, 1, 4, 4)))
    with pytest.raises(DataError, match="expected an array named 'x'"):
        load_source(f"npz:{tmp_path / 'noX.npz'}", SHAPE, 0)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 4, 4), dtype=np.float32))
    with pytest.raises(DataError, match="is empty: it holds 0 samples"):
        load_source(f"npz:{tmp_path / 'empty.npz'}", SHAPE, 0)
    nan = np.zeros((3, 1, 4, 4), dtype=np.float32)
    nan[1, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    with pytest.raises(DataError, match="1 sample\\(s\\) contain NaN or Inf"):
        load_source(f"npz:{tmp_path / 'nan.npz'}", SHAPE, 0)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_source(f"npz:{tmp_path / 'junk.npz'}", SHAPE, 0)
    with pytest.raises(DataError, match="file not found"):
        load_source(f"npz:{tmp_path / 'missing.npz'}", SHAPE, 0)


def test_imagefolder_source(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 40), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((20, 30, 3), value + i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_source(f"imagefolder:{tmp_path}", (3, 16, 16), 0)
    assert d.x.shape == (6, 3, 16, 16) and list(d.y) == [0, 0, 0, 1, 1, 1] and d.class_names == ["cat", "dog"]
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_source(f"imagefolder:{tmp_path / 'empty'}", (3, 16, 16), 0)
    with pytest.raises(DataError, match="one sub-directory per class"):
        load_source(f"imagefolder:{tmp_path / 'empty' / 'cls'}", (3, 16, 16), 0)


def test_synthetic_is_seeded_and_unknown_source_lists_valid():
    a = load_source("synthetic:4", SHAPE, 3)
    assert a.x.shape == (4, *SHAPE) and a.y is None
    assert np.array_equal(a.x, load_source("synthetic:4", SHAPE, 3).x)
    with pytest.raises(DataError, match="valid sources: digits, imagefolder, npz, synthetic"):
        load_source("cifar", SHAPE, 0)
