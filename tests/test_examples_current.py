"""docs/examples/ is the committed matrix of rendered emails (issue 13, item 2): this
test regenerates it with `nurture examples` into a temporary folder and fails when the
committed files differ, so reviewers always read what leads will read."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.catalog import LiveCatalog
from worker.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "examples"
# Renders a few hundred emails: seconds, so it runs with the full suite.
pytestmark = pytest.mark.slow


def files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_docs_examples_are_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    for name in ("SEQUENCES", "TEMPLATES", "CONTENT", "CRM"):
        monkeypatch.setenv(f"NURTURE_{name}_DIR", str(ROOT / name.lower()))
    fresh = tmp_path / "examples"
    assert main(["examples", "--out", str(fresh)]) == 0
    assert "example emails" in capsys.readouterr().out
    generated, committed = files(fresh), files(COMMITTED)
    stale = sorted(set(generated) ^ set(committed)) + sorted(
        name for name in set(generated) & set(committed) if generated[name] != committed[name]
    )
    assert not stale, (
        f"docs/examples/ is out of date ({len(stale)} files differ, e.g. {stale[:5]}); "
        "run `nurture examples` and commit the result"
    )


def test_the_matrix_covers_every_step_path_and_language(shipped_catalog: LiveCatalog) -> None:
    from worker.examples import LANGUAGES, PATHS, matrix

    examples = list(matrix(shipped_catalog.current))
    # quick-start is the README's demo: only the sample lead marked quick_start enters it.
    steps = {
        (s.id, step.id)
        for s in shipped_catalog.current.catalog.sequences.values()
        for step in s.steps
        if s.id != "quick-start"
    }
    assert {(e.sequence.id, e.step.id) for e in examples} == steps
    assert {e.path for e in examples} == set(PATHS)
    assert {e.language for e in examples} == set(LANGUAGES)
    assert {e.full for e in examples} == {True, False}
    # A trigger's `when` decides: outbound leads never get the inbound value emails.
    assert not [e for e in examples if e.sequence.id == "value-first" and e.path == "outbound"]
