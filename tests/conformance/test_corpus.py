"""Run every case of the conformance corpus (cases.py) through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeship.cli import main
from tests.conformance.cases import CASES, FLOOR, MARKER, Case


def test_the_corpus_does_not_shrink():
    assert len(CASES) >= FLOOR and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = case.make(tmp_path)
    try:
        code = main(argv)
        out = capsys.readouterr()
        printed = out.out + out.err
    finally:
        if case.after is not None:
            case.after(tmp_path)
    assert code == case.exit, printed[-3000:]
    flat = " ".join(printed.split())  # rich wraps long lines at 80 columns without a TTY
    for word in case.words:
        assert word in flat, (word, printed[-3000:])
    assert "Traceback" not in printed and "internal error" not in printed, printed[-3000:]
    assert "\x1b[" not in printed, "terminal codes reached the console"
    assert not list(tmp_path.rglob(MARKER)), "a payload ran"
    if not case.writes:
        assert not list(tmp_path.glob("run/artifacts/*")), "an artifact was written"
