"""The project's own docs: every file a comment or a doc cites exists, and the README stays a user's guide."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT

CITED = re.compile(r"(?<![\w./-])((?:docs|pipeline|calibration|exporters|targets|tests|benchmarks|examples|\.ci)"
                   r"/[\w/.*{},-]*\.(?:py|md|yaml|json)|README\.md)")


def _expand(path: str) -> list[str]:
    """``a/{b,c}.md`` -> ``a/b.md``, ``a/c.md``."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in _expand(path[:m.start()] + alt + path[m.end():])]


def test_every_cited_file_exists():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    missing = []
    for name in tracked:
        if not name.endswith((".py", ".md", ".yaml", ".toml")) or name.startswith("benchmarks/results/") or (
                name == "tests/test_docs.py"):  # its own examples
            continue
        for cited in CITED.findall((ROOT / name).read_text(encoding="utf-8")):
            for path in _expand(cited):
                if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                    missing.append(f"{name}: {path}")
    assert not missing, missing


def test_readme_is_a_users_guide_that_links_the_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 12 * 1024
    for doc in ("docs/design.md", "docs/extending.md", *(f"docs/stages/{s}.md" for s in
                                                          ("train", "prune", "distill", "quantize", "archify"))):
        assert doc in text, doc


def test_citations_are_recognised():
    text = "see ``docs/stages/{train,prune}.md`` and exporters/*_ops.py, not a/docs/x.md or docs/nope"
    assert [p for c in CITED.findall(text) for p in _expand(c)] == [
        "docs/stages/train.md", "docs/stages/prune.md", "exporters/*_ops.py"]
