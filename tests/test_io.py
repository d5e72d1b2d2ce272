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
