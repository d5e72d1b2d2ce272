"""Atomic writes: a failing writer leaves the target untouched and no temporary behind."""

import pytest

from edgeship.core.io import atomic_path, atomic_write_text, clean_stale_temporaries


def test_failed_write_leaves_previous_content(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_directory_artifacts_replace_whole(tmp_path):
    out = tmp_path / "openvino"
    for content in ("v1", "v2"):
        with atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / "model.xml").write_text(content)
    assert (out / "model.xml").read_text() == "v2" and len(list(tmp_path.iterdir())) == 1


def test_only_edgeships_own_stale_temporaries_are_cleaned(tmp_path):
    (tmp_path / ".edgeship-tmp-model.onnx-abc").mkdir()
    (tmp_path / "src" / ".build.tmp-cache").mkdir(parents=True)  # a user's, even with a temporary-like name
    (tmp_path / "deep" / ".edgeship-tmp-x").mkdir(parents=True)
    assert clean_stale_temporaries([tmp_path], recursive=False) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "src"]
    assert (tmp_path / "src" / ".build.tmp-cache").is_dir()
    assert clean_stale_temporaries([tmp_path / "deep"]) == 1


def test_free_space_check_names_the_folder(tmp_path):
    import errno

    import pytest

    from edgeship.core.io import ensure_free_space

    ensure_free_space(tmp_path / "not-yet" / "made", 1, "a test")  # the nearest existing parent is measured
    with pytest.raises(OSError, match="a test needs about") as e:
        ensure_free_space(tmp_path, 1 << 62, "a test")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path)
