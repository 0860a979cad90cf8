"""The shipped templates, layouts and content: they render for every locale, carry the
footer, give a Danish lead Danish text throughout, and pass ``check_templates``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker.content import ContentLibrary
from worker.rendering import Renderer
from worker.rendering.check import check_templates
from worker.sequences import load_catalog

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
UNSUBSCRIBE = "https://nurture.example/unsubscribe/tok-1?x=1&y=2"
ADDRESS = "Berg & Co ApS, Vestergade 1, 1456 København K"
NAMES = [
    "value/outcome_story",
    "value/case_study",
    "value/testimonial",
    "value/guide",
    "referral/intro",
    "referral/intro_weak",
    "outbound/intro",
    "outbound/value_follow_up",
    "decline/refusal",
    "value/keep_giving",
    "inbound/received",
]
FINNISH = NAMES  # complete sets: every shipped email in Danish and Finnish
REASONS = [
    "guarantee",
    "out_of_scope",
    "already_helped",
    "third_party",
    "budget",
    "ethics",
    "boundaries",
]


@pytest.fixture(scope="module")
def library() -> ContentLibrary:
    lib, problems = ContentLibrary.load(ROOT / "content")
    assert problems == []
    return lib


@pytest.fixture(scope="module")
def renderer(library: ContentLibrary) -> Renderer:
    return Renderer(TEMPLATES, content=library)


def ctx(locale: str | None, full: bool = True, **data: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {"id": "crm-1042", "email": "ann@example.com", "attributes": {}}
    if locale:
        lead["locale"] = locale
    if full:
        lead.update(
            first_name="Ann",
            last_name="Berg",
            company="Berg & Co",
            attributes={"industry": "saas", "problem": ["churn"], "budget": 800},
        )
    return {
        "lead": lead,
        "event": {"id": "evt-1", "type": "lead.created", "data": data},
        "sequence": {"id": "value-first", "description": "Value-first"},
        "step": {"id": "one"},
        "unsubscribe_url": UNSUBSCRIBE,
        "postal_address": ADDRESS,
    }


def test_the_shipped_set_passes_validation(library: ContentLibrary) -> None:
    catalog, problems = load_catalog(ROOT / "sequences")
    assert problems == []
    used = {step.template for seq in catalog.sequences.values() for step in seq.steps}
    # The lead's emails are the NAMES rendered here; notify steps' internal notes are
    # rendered by check_templates below and in tests/test_reach_validate.py.
    assert used - set(NAMES) == {"internal/referral_call", "internal/referral_find_out"}
    assert check_templates(catalog, TEMPLATES, library) == []
    assert check_templates(catalog, TEMPLATES, None) == []
    assert check_templates(catalog, TEMPLATES, library, locales=["da-DK", "fi-FI", "sv"]) == []


def test_every_language_has_every_template_it_promises() -> None:
    for name in NAMES:
        assert (TEMPLATES / f"{name}.j2").is_file(), name
        assert (TEMPLATES / "da" / f"{name}.j2").is_file(), name
    for name in FINNISH:
        assert (TEMPLATES / "fi" / f"{name}.j2").is_file(), name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("locale", ["en", "da", "da-DK", "fi", None, "xx"])
@pytest.mark.parametrize("full", [True, False])
def test_every_shipped_template_renders_with_the_footer(
    renderer: Renderer, name: str, locale: str | None, full: bool
) -> None:
    referrer = {"name": "Ole Holm", "company": "Holm & Co", "relationship": "weak"}
    email = renderer.render(name, locale, ctx(locale, full, referrer=referrer))
    assert email.subject and "\n" not in email.subject and len(email.subject) <= 150
    assert UNSUBSCRIBE in email.text
    assert ADDRESS in email.text
    if email.html is not None:
        assert UNSUBSCRIBE.replace("&", "&amp;") in email.html
        assert ADDRESS.replace("&", "&amp;") in email.html
        assert email.html.startswith("<!DOCTYPE html>")
    if full:
        assert "Ann" in email.text
    if "referral" in name:
        assert "Ole Holm" in email.text


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_template_renders_when_content_is_exhausted(
    renderer: Renderer, library: ContentLibrary, name: str
) -> None:
    everything = frozenset(item.id for item in library.items)
    for locale in ("en", "da", "fi"):
        email = renderer.render(name, locale, ctx(locale), everything)
        assert email.content_ids == ()
        assert UNSUBSCRIBE in email.text


@pytest.mark.parametrize("name", NAMES)
def test_a_danish_lead_gets_danish_all_the_way(renderer: Renderer, name: str) -> None:
    email = renderer.render(name, "da-DK", ctx("da-DK", referrer={"name": "Ole"}))
    assert email.template_path == str(TEMPLATES / "da" / f"{name}.j2")
    assert "Hej Ann" in email.text
    assert "Afmeld" in (email.html or "") or "Ét klik, så stopper vi" in email.text
    assert "Warm regards" not in email.text and "Unsubscribe" not in email.text
    if email.html is not None:
        assert '<html lang="da">' in email.html


@pytest.mark.parametrize("name", FINNISH)
def test_a_finnish_lead_gets_finnish(renderer: Renderer, name: str) -> None:
    email = renderer.render(name, "fi", ctx("fi"))
    assert "Hei Ann" in email.text
    assert "Ystävällisin terveisin" in email.text
    assert "Yksi napsautus, niin lopetamme" in email.text


def test_value_pieces_are_matched_to_the_lead_and_never_repeat(renderer: Renderer) -> None:
    received: frozenset[str] = frozenset()
    seen: list[str] = []
    for _ in range(8):
        email = renderer.render("value/case_study", "en", ctx("en"), received)
        seen.extend(email.content_ids)
        received |= set(email.content_ids)
    assert seen[0] == "saas-churn-halved"  # the lead is saas with a churn problem
    assert len(seen) == len(set(seen))
    danish = renderer.render("value/case_study", "da", ctx("da"))
    assert danish.content_ids == ("da-saas-churn-halved",)


def test_referral_intro_names_the_referrer_warmly(renderer: Renderer) -> None:
    referrer = {
        "name": "Ole Holm",
        "company": "Holm & Co",
        "relationship": {"role": "former_colleague", "strength": "strong"},
    }
    email = renderer.render("referral/intro", "en", ctx("en", referrer=referrer))
    assert email.subject == "Ole Holm suggested we talk"
    text = " ".join(email.text.split())
    assert "Your former colleague Ole Holm at Holm & Co suggested we get in touch" in text
    # Free text from the CRM is never printed; "client" is one of ours, not theirs.
    for relationship, expected in [
        ("met once at a conference", "Ole Holm at Holm & Co suggested"),
        ("client", "Ole Holm at Holm & Co, whom we have worked with, suggested"),
    ]:
        referrer["relationship"] = relationship
        email = renderer.render("referral/intro", "en", ctx("en", referrer=referrer))
        text = " ".join(email.text.split())
        assert expected in text and "met once" not in text and "your client" not in text
    weak = renderer.render("referral/intro_weak", "en", ctx("en", referrer=referrer))
    assert "together with Ole Holm" in " ".join(weak.text.split())
    # No referrer named: nobody is invented ("a friend of yours").
    nameless = renderer.render("referral/intro", "en", ctx("en"))
    assert "Your name was given to us" in nameless.text
    assert "friend" not in nameless.text and "knows you well" not in nameless.text
    assert nameless.subject == "A recommendation, and one question"


MARKERS = {
    "en": ("Thank you for reaching out", "here are a few things that may help", "door is open"),
    "da": ("Tak, fordi du tog kontakt", "her er et par ting", "står vores dør altid åben"),
    "fi": ("Kiitos, että otit meihin yhteyttä", "tässä muutama asia", "ovemme on aina auki"),
}
# A past client (reason already_helped) gets a personal note instead of the thanks.
PAST_CLIENT = {
    "en": "thank you for thinking of us",
    "da": "tak, fordi du tænkte på os",
    "fi": "kiitos, että ajattelit meitä",
}


def _no_paragraph(text: str, locale: str) -> str:
    """The text between the thanks paragraph and the suggestions."""
    suggestions = MARKERS[locale][1]
    middle = text.split("\n\n", 2)[2]  # after greeting and thanks
    return middle.split(suggestions[1:])[0]


@pytest.mark.parametrize("locale", ["en", "da", "fi"])
def test_decline_is_the_three_part_refusal_package(renderer: Renderer, locale: str) -> None:
    suggestions, close = MARKERS[locale][1:]
    paragraphs: dict[str | None, str] = {}
    for reason in [*REASONS, None, "something-new"]:
        data = {"reason": reason} if reason else {}
        email = renderer.render("decline/refusal", locale, ctx(locale, **data))
        text = "\n\n".join(" ".join(p.split()) for p in email.text.split("\n\n"))
        # 1. thanks for reaching out and for the trust
        thanks = PAST_CLIENT[locale] if reason == "already_helped" else MARKERS[locale][0]
        assert thanks in text
        # 2. a clear no, with a paragraph for the reason
        paragraphs[reason] = _no_paragraph(text, locale)
        # 3. a warm close with suggestions (at least one) and an open door
        tail = text.split(suggestions, 1)[1]
        assert " - " in tail or "\n- " in tail
        assert close in tail
        assert text.index(thanks) < text.index(suggestions) < text.index(close)
    generic = paragraphs[None]
    assert paragraphs["something-new"] == generic
    # "ethics" is declined without naming the reason (article 003): the general no.
    assert paragraphs["ethics"] == generic
    named = [r for r in REASONS if r != "ethics"]
    for reason in named:
        assert paragraphs[reason] != generic, reason
    assert len({paragraphs[r] for r in named}) == len(named)


def test_decline_suggestions_pick_a_free_guide_for_the_reason(renderer: Renderer) -> None:
    email = renderer.render("decline/refusal", "en", ctx("en", reason="guarantee"))
    assert email.content_ids == ("guide-choosing-a-partner",)
    email = renderer.render("decline/refusal", "fi", ctx("fi", reason="budget"))
    assert email.content_ids == ("fi-guide-own-plan",)


def test_an_english_fallback_email_carries_no_finnish_piece(
    library: ContentLibrary, tmp_path: Path
) -> None:
    """Where a translation is missing, the Finnish lead gets the English email, and
    its piece is English too, even where a Finnish piece fits better: the fallback is
    for the whole email, never a mix."""
    import shutil

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "fi" / "value" / "case_study.j2").unlink()
    renderer = Renderer(templates, content=library)
    context = ctx("fi")
    context["lead"]["attributes"] = {"industry": "manufacturing", "problem": ["delivery"]}
    email = renderer.render("value/case_study", "fi", context)
    assert email.template_path.endswith("templates/value/case_study.j2")
    assert email.content_ids
    assert all(library.by_id[i].locale == "en" for i in email.content_ids)
    # The Finnish email (where one exists) still picks Finnish pieces.
    finnish = renderer.render("value/outcome_story", "fi", context)
    assert "/fi/" in finnish.template_path
    assert [library.by_id[i].locale for i in finnish.content_ids] == ["fi"]
