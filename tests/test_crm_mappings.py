"""CRM mapping files (``crm/*.yaml``) as marketing ops edit them: every mistake named
with the file, the line and a fix (did-you-mean for misspellings), reported by
``nurture validate``, and edits picked up live through the LiveCatalog."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from worker.catalog import LiveCatalog
from worker.crm.mapping import check_mappings, load_mapping
from worker.errors import CatalogError, MappingError, Problem


@pytest.fixture
def crm(tmp_path: Path) -> Path:
    """A copy of the shipped crm/ folder a test may edit."""
    target = tmp_path / "crm"
    shutil.copytree(ROOT / "crm", target)
    return target


def edit(path: Path, old: str, new: str) -> str:
    """Replace ``old`` once in a real file; returns the new text."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    text = text.replace(old, new, 1)
    path.write_text(text)
    return text


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line containing ``needle``."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# (file, old text, new text, the line to point at (contains), in message, in fix)
MISTAKES = [
    (
        "hubspot.yaml",
        "\nevents:\n",
        "\nevnts:\n",
        "evnts:",
        "unknown key `evnts`",
        "did you mean `events`?",
    ),
    (
        "hubspot.yaml",
        "  - event: workflow:customer\n    type: deal.won\n",
        "  - event: workflow:customer\n    type: deal.wonn\n",
        "type: deal.wonn",
        "'deal.wonn' looks like a typo of deal.won",
        "write deal.won",
    ),
    (
        "hubspot.yaml",
        "  - event: workflow:new-lead\n    type: lead.created\n",
        "  - event: workflow:new-lead\n    type: Lead Created\n",
        "type: Lead Created",
        "'Lead Created' is not an event type",
        "did you mean lead.created?",
    ),
    (
        "hubspot.yaml",
        "    property: hs_lead_status\n",
        "    propety: hs_lead_status\n",
        "propety:",
        "unknown key `propety`",
        "did you mean `property`?",
    ),
    (
        "hubspot.yaml",
        "crm: hubspot\n",
        "crm: hubspt\n",
        "crm: hubspt",
        "Input should be 'hubspot' or 'pipedrive'",
        "did you mean `hubspot`?",
    ),
    (
        "pipedrive.yaml",
        "crm: pipedrive\n",
        "crm: hubspot\n",
        "crm: hubspot",
        "but this is the file for pipedrive",
        "write `crm: pipedrive`",
    ),
    (
        "hubspot.yaml",
        "\nevents:\n",
        "\nevents:\n  - event: a\n   type: b\n",
        "   type: b",
        "this is not valid YAML",
        "same column",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "at", "message", "fix"), MISTAKES)
def test_mapping_mistake_names_file_line_and_fix(
    crm: Path, name: str, old: str, new: str, at: str, message: str, fix: str
) -> None:
    path = crm / name
    text = edit(path, old, new)
    problems = check_mappings(crm)
    assert problems, "expected a problem"
    hits = [p for p in problems if message in p.message]
    assert hits, "\n".join(map(str, problems))
    assert isinstance(hits[0], Problem)
    assert hits[0].file == str(path)
    assert hits[0].line == line_of(text, at), str(hits[0])
    assert fix in hits[0].fix, str(hits[0])
    assert str(hits[0]).startswith(f"{path}:{hits[0].line}: ")


def test_a_misspelled_lead_field_suggests_the_right_one(crm: Path) -> None:
    path = crm / "hubspot.yaml"
    text = path.read_text()
    # Map one more property onto a misspelled lead field, at the end of `fields:`.
    text = text.replace("\nfields:\n", "\nfields:\n  jobtitle: frist_name\n", 1)
    path.write_text(text)
    with pytest.raises(MappingError) as info:
        load_mapping(path, "hubspot")
    [problem] = info.value.problems
    assert problem.line == line_of(text, "jobtitle: frist_name")
    assert "'frist_name' is not a lead field" in problem.message
    assert problem.fix.startswith("did you mean `first_name`?")


def test_a_misspelled_key_is_not_also_reported_missing(crm: Path) -> None:
    edit(crm / "hubspot.yaml", "\nevents:\n", "\nevnts:\n")
    problems = check_mappings(crm)
    assert [p.message for p in problems] == ["unknown key `evnts`"]


@pytest.mark.slow  # starts the CLI or worker processes
def test_nurture_validate_reports_mapping_problems_with_the_rest(crm: Path, tmp_path: Path) -> None:
    text = edit(crm / "pipedrive.yaml", "    type: lead.created\n", "    typ: lead.created\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(
        {
            "NURTURE_SEQUENCES_DIR": str(ROOT / "sequences"),
            "NURTURE_TEMPLATES_DIR": str(ROOT / "templates"),
            "NURTURE_CONTENT_DIR": str(ROOT / "content"),
            "NURTURE_CRM_DIR": str(crm),
            "PYTHONPATH": str(ROOT),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "validate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    expected = f"crm/pipedrive.yaml:{line_of(text, 'typ: lead.created')}: unknown key `typ`"
    lines = [line for line in result.stdout.splitlines() if line.startswith(expected)]
    assert lines, result.stdout
    assert "did you mean `type`?" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "1 problem(s) found" in result.stderr


def test_live_catalog_reloads_an_edited_mapping(
    make_settings: Callable[..., Any], crm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveCatalog(make_settings(crm_dir=crm))
    hubspot = live.mapping("hubspot")
    assert [r.type for r in hubspot.events if r.event == "workflow:customer"] == ["deal.won"]

    path = crm / "hubspot.yaml"
    edit(
        path,
        "  - event: workflow:customer\n    type: deal.won\n",
        "  - event: workflow:customer\n    type: deal.lost\n",
    )
    edited = live.mapping("hubspot")
    assert edited is not hubspot
    assert [r.type for r in edited.events if r.event == "workflow:customer"] == ["deal.lost"]
    assert live.current.mapping("pipedrive") is not None

    # A broken edit is refused: the last good mapping stays in force and the log says why.
    text = edit(path, "crm: hubspot\n", "crm: hubspot\nevents_extra: 1\n")
    assert live.reload_if_changed() is False
    assert live.mapping("hubspot") is edited
    [problem] = live.last_problems
    assert (problem.file, problem.line) == (str(path), line_of(text, "events_extra"))
    assert "events_extra" in caplog.text

    # A deleted mapping file takes the adapter away, with the file named.
    path.unlink()
    assert live.reload_if_changed() is True
    with pytest.raises(MappingError, match=r"hubspot\.yaml: the mapping file does not exist"):
        live.mapping("hubspot")


def test_a_broken_mapping_at_start_stops_the_catalog(
    make_settings: Callable[..., Any], crm: Path
) -> None:
    edit(crm / "hubspot.yaml", "crm: hubspot\n", "crm: hubsopt\n")
    with pytest.raises(CatalogError) as info:
        LiveCatalog(make_settings(crm_dir=crm))
    assert any("hubspot.yaml" in p.file for p in info.value.problems)
