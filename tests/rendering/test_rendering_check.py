"""``check_templates``: real mistakes a marketer makes, each reported with the file,
the line and a fix, against the shipped sequences."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worker.content import ContentLibrary
from worker.errors import Problem
from worker.rendering.check import check_templates
from worker.sequences import Catalog, load_catalog

ROOT = Path(__file__).resolve().parents[2]

HEAD = "{% block subject %}Hello{% endblock %}\n"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    found, problems = load_catalog(ROOT / "sequences")
    assert problems == []
    return found


@pytest.fixture(scope="module")
def library() -> ContentLibrary:
    return ContentLibrary.load(ROOT / "content")[0]


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", target)
    return target


def run(
    catalog: Catalog, templates: Path, library: ContentLibrary | None, **files: str
) -> list[Problem]:
    for name, source in files.items():
        path = templates / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return check_templates(catalog, templates, library)


MISTAKES = [
    # (case, file, source, line, message, fix)
    (
        "misspelled lead field",
        "value/guide.j2",
        HEAD + "{% block text %}\nHi {{ lead.first_nme }}\n{% endblock %}",
        3,
        "`lead.first_nme` is not something a lead has — known fields: id, email, first_name",
        "did you mean `first_name`?",
    ),
    (
        "optional lead field used bare",
        "value/guide.j2",
        HEAD + "{% block text %}\nHi\n{{ lead.first_name }}\n{% endblock %}",
        4,
        "`lead.first_name` may be missing for some leads",
        "{{ lead.first_name | default('there') }}",
    ),
    (
        "CRM attribute used bare",
        "value/guide.j2",
        HEAD + "{% block text %}\nAs a {{ lead.attributes.industry }} company\n{% endblock %}",
        3,
        "`lead.attributes.industry` may be missing",
        "{% if lead.attributes.industry is defined %}",
    ),
    (
        "event data the trigger does not guarantee",
        "value/guide.j2",
        HEAD + "{% block text %}\nFrom {{ event.data.referrer.name }}\n{% endblock %}",
        3,
        "`event.data.referrer` is not guaranteed by the trigger of sequence",
        "{% if event.data.referrer is defined %}",
    ),
    (
        "decline reason used without a fallback",
        "decline/refusal.j2",
        HEAD + "{% block text %}\nBecause {{ event.data.reason }}.\n{% endblock %}",
        3,
        "`event.data.reason` is not guaranteed",
        "default(",
    ),
    (
        "body instead of text",
        "value/guide.j2",
        HEAD + "{% block body %}\nHello\n{% endblock %}",
        2,
        "unknown block `body`",
        "rename it to {% block text %}",
    ),
    (
        "no subject",
        "value/guide.j2",
        "{% block text %}\nHello\n{% endblock %}",
        1,
        "the email has no subject block",
        "add {% block subject %}",
    ),
    (
        "if never closed",
        "value/guide.j2",
        HEAD + "{% block text %}\n{% if lead.first_name is defined %}\nHi\n{% endblock %}",
        5,
        "template syntax error",
        "add {% endif %}",
    ),
    (
        "misspelled tag",
        "value/guide.j2",
        HEAD + "{% block text %}\n{% if true %}Hi{% endfi %}\n{% endblock %}",
        3,
        "unknown tag 'endfi'",
        "did you mean `endif`?",
    ),
    (
        "unknown filter",
        "value/guide.j2",
        HEAD + "{% block text %}\n{{ lead.email | uppper }}\n{% endblock %}",
        3,
        "No filter named 'uppper'",
        "did you mean `upper`?",
    ),
    (
        "content without a fallback",
        "value/guide.j2",
        HEAD
        + "{% block text %}\n{% set g = content('guide') %}\nRead {{ g.title }}\n{% endblock %}",
        4,
        "content('guide') found nothing left for this lead",
        "{% else %}",
    ),
    (
        "content kind misspelled",
        "value/guide.j2",
        HEAD + "{% block text %}\n{% set g = content('guides') %}\nHi\n{% endblock %}",
        3,
        "no kind of content called `guides`",
        "did you mean `guide`?",
    ),
    (
        "text that is empty for some leads",
        "value/guide.j2",
        HEAD + "{% block text %}\n{% if lead.first_name is defined %}Hi{% endif %}\n{% endblock %}",
        2,
        "the text block produced no text",
        "add an {% else %}",
    ),
    (
        "subject too long",
        "value/guide.j2",
        "{% block subject %}"
        + "An offer " * 20
        + "{% endblock %}\n{% block text %}\nHi\n{% endblock %}",
        1,
        "the subject is 179 characters long",
        "under 150",
    ),
    (
        "two-line subject",
        "value/guide.j2",
        "{% block subject %}Hello\nthere{% endblock %}\n{% block text %}\nHi\n{% endblock %}",
        1,
        "the subject has a line break",
        "keep {% block subject %} on one line",
    ),
    (
        "text outside the blocks",
        "value/guide.j2",
        "Dear customer,\n" + HEAD + "{% block text %}\nHi\n{% endblock %}",
        1,
        "text outside a block is never sent",
        "move it inside {% block text %}",
    ),
    (
        "set outside the blocks",
        "value/guide.j2",
        "{% set g = content('guide') %}\n" + HEAD + "{% block text %}\nHi\n{% endblock %}",
        1,
        "a {% set %} outside the blocks has no effect",
        "move it inside each block",
    ),
    (
        "extends the layout",
        "value/guide.j2",
        "{% extends '_layout.j2' %}\n" + HEAD + "{% block text %}\nHi\n{% endblock %}",
        1,
        "emails do not extend another template",
        "remove the {% extends %} line",
    ),
    (
        "html block with its own document",
        "value/guide.j2",
        HEAD
        + "{% block text %}\nHi\n{% endblock %}\n"
        + "{% block html %}\n<html><body>Hi</body></html>\n{% endblock %}",
        6,
        "the html block writes its own <html>",
        "the layout adds <html>, <body> and the footer",
    ),
    (
        "bare variable name",
        "value/guide.j2",
        HEAD + "{% block text %}\nHi {{ first_name }}\n{% endblock %}",
        3,
        "`first_name` is not defined in email templates",
        "write lead.first_name rather than first_name",
    ),
    (
        "broken Danish variant",
        "da/value/guide.j2",
        HEAD + "{% block text %}\nHej {{ lead.fornavn }}\n{% endblock %}",
        3,
        "`lead.fornavn` is not something a lead has",
        "lead.attributes.fornavn",
    ),
    (
        "misspelled filter in a branch no sample lead takes",
        "value/guide.j2",
        HEAD
        + "{% block text %}\n{% if lead.attributes.vip %}\n"
        + "{{ lead.company | uper }}\n{% endif %}Hi\n{% endblock %}",
        4,
        "there is no filter named `uper`",
        "did you mean `upper`?",
    ),
    (
        "misspelled test",
        "value/guide.j2",
        HEAD + "{% block text %}\n{% if lead.company is defind %}Hi{% endif %}Hi\n{% endblock %}",
        3,
        "there is no test named `defind`",
        "did you mean `defined`?",
    ),
    (
        "python internals",
        "value/guide.j2",
        HEAD + "{% block text %}\n{{ lead.__class__ }}\n{% endblock %}",
        3,
        "cannot be used in an email template",
        "docs/templates.md",
    ),
]


@pytest.mark.parametrize(
    ("file", "source", "line", "message", "fix"),
    [m[1:] for m in MISTAKES],
    ids=[m[0] for m in MISTAKES],
)
def test_mistakes_are_reported_with_file_line_and_fix(
    catalog: Catalog,
    library: ContentLibrary,
    templates: Path,
    file: str,
    source: str,
    line: int,
    message: str,
    fix: str,
) -> None:
    problems = run(catalog, templates, library, **{file: source})
    assert problems, "expected at least one problem"
    hits = [p for p in problems if message in p.message]
    assert hits, "\n".join(str(p) for p in problems)
    assert hits[0].file == str(templates / file)
    assert hits[0].line == line
    assert fix in hits[0].fix, str(hits[0])
    assert str(hits[0]).startswith(f"{templates / file}:{line}: ")


def test_missing_template_points_at_the_step_and_suggests_names(
    catalog: Catalog, library: ContentLibrary, templates: Path
) -> None:
    (templates / "value/guide.j2").rename(templates / "value/guides.j2")
    problems = check_templates(catalog, templates, library)
    files = {(p.file, p.line) for p in problems}
    assert ("sequences/value-first.yaml", 56) in files
    assert ("sequences/referral-intro.yaml", 101) in files
    first = problems[0]
    assert "step `how-to-guide` uses template `value/guide`" in first.message
    assert f"{templates / 'value/guide.j2'} does not exist" in first.message
    assert "did you mean `value/guides`?" in first.fix


def test_sequence_with_other_mistakes_still_has_its_templates_checked(
    library: ContentLibrary, templates: Path, tmp_path: Path
) -> None:
    """One run of validate shows every mistake, not one layer per run."""
    sequences = tmp_path / "sequences"
    shutil.copytree(ROOT / "sequences", sequences)
    path = sequences / "value-first.yaml"
    text = path.read_text()
    text = text.replace("3 business days", "3 bussiness days")
    text = text.replace("template: value/testimonial", "template: value/testimonal")
    path.write_text(text)
    catalog, problems = load_catalog(sequences)
    assert "value-first" not in catalog.sequences
    assert any("bussiness" in p.message for p in problems)
    found = check_templates(catalog, templates, library)
    hits = [p for p in found if "value/testimonal" in p.message]
    assert len(hits) == 1, found
    assert hits[0].file.endswith("value-first.yaml")
    assert text.splitlines()[hits[0].line - 1].strip() == "- id: testimonial"
    assert "did you mean `value/testimonial`?" in hits[0].fix
    # Templates that exist are not reported for a left-out sequence.
    assert [p for p in found if "value-first.yaml" in p.file] == hits


def test_template_only_in_a_locale_folder(
    catalog: Catalog, library: ContentLibrary, templates: Path
) -> None:
    (templates / "value/guide.j2").unlink()
    problems = check_templates(catalog, templates, library)
    assert any("it exists only in da, fi/" in p.fix for p in problems)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, "there is no layout"),
        (
            "{% block text_footer %}{{ postal_address }}{% endblock %}"
            "{% block html_footer %}{{ postal_address }} {{ unsubscribe_url }}{% endblock %}"
            "{% block html_document %}{{ body }}{{ footer }}{% endblock %}",
            "the text_footer block does not show the unsubscribe link",
        ),
        (
            "{% block text_footer %}{{ postal_address }} {{ unsubscribe_url }}{% endblock %}"
            "{% block html_footer %}{{ unsubscribe_url }}{% endblock %}"
            "{% block html_document %}{{ body }}{{ footer }}{% endblock %}",
            "the html_footer block does not show the postal address",
        ),
        (
            "{% block text_footer %}{{ postal_address }} {{ unsubscribe_url }}{% endblock %}"
            "{% block html_footer %}{{ postal_address }} {{ unsubscribe_url }}{% endblock %}"
            "{% block html_document %}{{ body }}{% endblock %}",
            "the html_document block does not show {{ footer }}",
        ),
        (
            "{% block text_footer %}{{ postal_address }} {{ unsubscribe_url }}{% endblock %}",
            "the layout has no html_footer block",
        ),
        (
            "{% block text_footer %}{{ postal_adress }}{% endblock %}",
            "`postal_adress` is not defined",
        ),
    ],
)
def test_layout_problems(
    catalog: Catalog, library: ContentLibrary, templates: Path, layout: str | None, message: str
) -> None:
    if layout is None:
        (templates / "_layout.j2").unlink()
    else:
        (templates / "_layout.j2").write_text(layout, encoding="utf-8")
    problems = check_templates(catalog, templates, library)
    hits = [p for p in problems if message in p.message]
    assert hits, "\n".join(str(p) for p in problems)
    assert hits[0].file == str(templates / "_layout.j2")
    assert hits[0].fix


def test_missing_templates_folder(catalog: Catalog, tmp_path: Path) -> None:
    problems = check_templates(catalog, tmp_path / "nope", None)
    assert len(problems) == 1 and "does not exist" in problems[0].message


def test_orphan_templates_are_allowed(
    catalog: Catalog, library: ContentLibrary, templates: Path
) -> None:
    problems = run(catalog, templates, library, **{"drafts/idea.j2": "{% block nonsense %}"})
    assert problems == []
