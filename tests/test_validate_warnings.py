"""``nurture validate`` warnings (issue 13, item 6): what loads fine but silently
changes what is sent, each with file:line and the fix; ``--strict`` fails on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worker.catalog import load_and_check
from worker.cli import main
from worker.lint import Folders, lint, rendered_subjects
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# Each test renders every shipped email in every language (the subject check): seconds
# each, so they run with the full suite.
pytestmark = pytest.mark.slow


@pytest.fixture
def dirs(catalog_dirs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    crm = tmp_path / "crm"
    shutil.copytree(ROOT / "crm", crm)
    # catalog_dirs leaves keep-giving out for the pipeline tests; it sends a template.
    shutil.copy(ROOT / "sequences" / "keep-giving.yaml", catalog_dirs["sequences"])
    return {**catalog_dirs, "crm": crm}


def warnings(dirs: dict[str, Path]) -> list[str]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        sequences_dir=dirs["sequences"],
        templates_dir=dirs["templates"],
        content_dir=dirs["content"],
        crm_dir=dirs["crm"],
    )
    loaded, problems = load_and_check(settings)
    assert loaded is not None, [str(p) for p in problems]
    folders = Folders(dirs["sequences"], dirs["templates"], dirs["content"], dirs["crm"])
    subjects = rendered_subjects(loaded, dirs["templates"])
    return [str(w) for w in lint(folders, loaded.catalog, loaded.content, subjects)]


def has(found: list[str], *parts: str) -> bool:
    return any(all(part in line for part in parts) for line in found)


def test_the_shipped_catalog_warns_only_about_placeholder_links(dirs: dict[str, Path]) -> None:
    found = warnings(dirs)
    assert found, "the shipped content uses example.com placeholders"
    assert all("placeholders (example.com)" in line for line in found), found


def test_yaml_values_read_otherwise_than_written(dirs: dict[str, Path]) -> None:
    path = dirs["sequences"] / "webinar.yaml"
    path.write_text(
        "id: webinar\n"
        "trigger:\n"
        "  event: webinar.attended\n"
        "  when: {attributes.opted_in: yes, attributes.zip: 0123}\n"
        "send_window: {days: mon-fri, hours: 09:00-17:00}\n"
        "steps:\n"
        "  - {id: a, wait: 1d, template: value/guide}\n"
    )
    found = warnings(dirs)
    assert has(found, "webinar.yaml:4:", "`yes` is read as the text 'yes', not as true", "true")
    assert has(found, "webinar.yaml:4:", "`0123` is read as the number 123", '"0123"')
    path.write_text(
        path.read_text().replace("09:00-17:00", '"09:00-17:00"') + "description: 1:30\n"
    )
    assert has(warnings(dirs), "webinar.yaml:8:", "as the number 90", 'put it in quotes: "1:30"')


def test_names_that_are_not_languages_and_ignored_files(dirs: dict[str, Path]) -> None:
    shutil.copytree(dirs["templates"] / "da", dirs["templates"] / "dk")
    (dirs["templates"] / "value" / "guide.html").write_text("<p>old copy</p>")
    (dirs["sequences"] / "notes.yml~").write_text("x")
    (dirs["templates"] / "value" / "spring_offer.j2").write_text(
        "{% block subject %}Spring{% endblock %}{% block text %}Hi{% endblock %}"
    )
    found = warnings(dirs)
    assert has(found, "/dk:", "`dk` is not a language", "country code; the language is `da`")
    assert has(found, "guide.html:", "never read", "rename it to guide.j2")
    assert has(found, "notes.yml~:", "never read")
    assert has(found, "spring_offer.j2:", "no sequence step sends this template")


def test_links_and_merge_tags_of_other_tools(dirs: dict[str, Path]) -> None:
    guide = dirs["templates"] / "value" / "guide.j2"
    text = guide.read_text()
    marker = "{% block text %}\n"
    assert marker in text
    extra = (
        "Hi *|FNAME|*, and %%FirstName%% at {{contact.firstname}}.\n"
        "See http://localhost:8000/offer and www.acme.dk/price and http://acme.dk/x\n"
    )
    guide.write_text(text.replace(marker, marker + "{% if false %}\n" + extra + "{% endif %}\n"))
    found = warnings(dirs)
    line = text[: text.index(marker)].count("\n") + 3
    where = f"guide.j2:{line}:"
    assert has(found, where, "`*|FNAME|*` is a Mailchimp merge tag", "lead | first_name")
    assert has(found, where, "`%%FirstName%%`", "sends it as written")
    assert has(found, where, "`{{contact.firstname`", "HubSpot")
    where = f"guide.j2:{line + 1}:"
    assert has(found, where, "http://localhost:8000/offer points to this computer")
    assert has(found, where, "www.acme.dk/price has no https://", "https://www.acme.dk/price")
    assert has(found, where, "http://acme.dk/x is not https", "https://acme.dk/x")


def test_timing_that_is_surely_a_mistake(dirs: dict[str, Path]) -> None:
    (dirs["sequences"] / "webinar.yaml").write_text(
        "id: webinar\n"
        "trigger: {event: webinar.attended}\n"
        "steps:\n"
        "  - {id: a, wait: 1d, template: value/guide}\n"
        "  - {id: b, wait: 2d, template: value/case_study}\n"
        "  - {id: c, wait: 0m, template: value/testimonial}\n"
    )
    found = warnings(dirs)
    assert has(found, "webinar.yaml:6:", "step 3 (`c`) waits 0", "give it a wait")


def test_two_sequences_starting_the_same_day_on_one_event(dirs: dict[str, Path]) -> None:
    (dirs["sequences"] / "welcome.yaml").write_text(
        "id: welcome\n"
        "trigger: {event: lead.created}\n"
        "steps:\n"
        "  - {id: a, wait: 1h, template: value/guide}\n"
    )
    found = warnings(dirs)
    assert has(found, "welcome.yaml:1:", "`welcome` and `value-first`", "lead.created")
    # The shipped sequences on lead.created exclude each other by source.
    assert not has(found, "`referral-intro` and `value-first`")


def test_long_subjects_and_partial_translations(dirs: dict[str, Path]) -> None:
    guide = dirs["templates"] / "fi" / "value" / "guide.j2"
    text = guide.read_text()
    start = text.index("{% block subject %}\n") + len("{% block subject %}\n")
    guide.write_text(
        text[:start] + "Tämä otsikko on aivan liian pitkä puhelimen näytölle, " + text[start:]
    )
    (dirs["templates"] / "da" / "value" / "testimonial.j2").unlink()
    found = warnings(dirs)
    assert has(found, "fi/value/guide.j2:", "phones and inboxes cut it", "shorten it to 60")
    assert has(
        found, "/da:", "a partial translation", "value/testimonial", "da/value/testimonial.j2"
    )


def test_strict_fails_on_warnings(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, path in dirs.items():
        monkeypatch.setenv(f"NURTURE_{name.upper()}_DIR", str(path))
    monkeypatch.chdir(dirs["crm"].parent)
    assert main(["validate"]) == 0
    assert main(["validate", "--strict"]) == 1
    out = capsys.readouterr()
    assert "warning: " in out.out and "(--strict)" in out.err
