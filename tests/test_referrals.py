"""Referred leads, end to end on a real Redis with real dramatiq workers.

A lead whose source is ``referral`` or whose event names a referrer gets the
referral sequence (never value-first); its introduction names the referrer, and a
referrer who only knows the lead a little (``relationship: weak``) brings the more
careful first step of article 002 instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from tests.harness import Harness, event, running

#: Messages run inline on dramatiq's StubBroker (see tests/harness.py): no worker threads.
INLINE_QUEUE = True


DAY = 86400.0
URL = re.compile(r"https://example\.com/\S+")
OLE = {"name": "Ole Holm", "company": "Holm & Co"}


def lead_fields(**fields: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "first_name": "Ann",
        "company": "Berg ApS",
        "timezone": "Europe/Copenhagen",
        "attributes": {"industry": "saas", "problem": "churn", "budget": 5000},
    }
    lead.update(fields)
    return lead


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())


def run(h: Harness, *events: Any) -> list[EmailMessage]:
    with running(h):
        h.emit(*events)
        h.settle()
        h.run_until(h.clock.now().timestamp() + 40 * DAY)
    return [
        m for m in h.messages() if m["X-Nurture-Lead"] == "lead-1" and not m["X-Nurture-Internal"]
    ]


def notes(h: Harness) -> list[tuple[str, str]]:
    """The internal notify emails about lead-1: (step, subject)."""
    return [
        (m["X-Nurture-Step"], m["Subject"])
        for m in h.messages()
        if m["X-Nurture-Lead"] == "lead-1" and m["X-Nurture-Internal"] == "notify"
    ]


def steps(messages: list[EmailMessage]) -> list[tuple[str, str]]:
    return [(m["X-Nurture-Sequence"], m["X-Nurture-Step"]) for m in messages]


REFERRAL_STEPS = [
    ("referral-intro", "intro"),
    ("referral-intro", "case-study"),
    ("referral-intro", "how-to-guide"),
]
WEAK_STEPS = [("referral-intro", "intro-weak"), *REFERRAL_STEPS[1:]]
STRONG = {**OLE, "relationship": "strong"}


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        ({"source": "referral"}, {"referrer": STRONG}),
        ({}, {"referrer": STRONG}),  # some CRMs fill in the referrer but no source
        ({"source": "website"}, {"referrer": STRONG}),  # the named referrer wins
    ],
    ids=["source-and-referrer", "referrer-only", "website-with-referrer"],
)
def test_referred_lead_gets_an_intro_naming_the_referrer(
    make_harness: Callable[..., Harness], fields: dict[str, Any], data: dict[str, Any]
) -> None:
    h = make_harness()
    messages = run(h, event("e1", data=data, **lead_fields(**fields)))
    assert steps(messages) == REFERRAL_STEPS
    intro = messages[0]
    assert intro["Subject"] == "Ole Holm suggested we talk"
    text = text_of(intro)
    assert text.startswith("Hi Ann,")
    assert "Ole Holm at Holm & Co suggested we get in touch with you" in text
    assert "please pass on our thanks to Ole Holm" in text
    # It asks rather than pitches (article 004), and brings a story with it.
    assert "what would a good outcome look like for Berg ApS" in text
    assert URL.search(text)
    # Never "thank you for reaching out": they did not; the footer says why they hear.
    assert "reaching out" not in text
    assert "because Ole Holm suggested we get in touch" in text


def test_referral_source_without_a_referrer_invents_nobody(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    messages = run(h, event("e1", **lead_fields(source="referral")))
    assert steps(messages) == WEAK_STEPS
    assert notes(h) == [("find-out", "Referral Ann: who referred them?")]
    assert messages[0]["Subject"] == "A short introduction"
    text = text_of(messages[0])
    assert "Your name was given to us as someone we might be able to help" in text
    assert "friend" not in text and "knows you well" not in text


@pytest.mark.parametrize(
    ("relationship", "shown"),
    [
        ("close", "Ole Holm at Holm & Co suggested"),
        ({"role": "former_colleague", "strength": "strong"}, "Your former colleague Ole Holm"),
    ],
)
def test_a_strong_relationship_takes_the_warm_intro(
    make_harness: Callable[..., Harness], relationship: Any, shown: str
) -> None:
    referrer = {**OLE, "relationship": relationship}
    h = make_harness()
    messages = run(h, event("e1", data={"referrer": referrer}, **lead_fields(source="referral")))
    assert steps(messages) == REFERRAL_STEPS
    assert shown in text_of(messages[0])
    assert notes(h) == []  # a strong relationship needs no one to step in


@pytest.mark.parametrize(
    "relationship",
    ["weak", None, "met once at a conference", {"role": "friend", "strength": "unknown"}],
)
def test_a_weak_or_unknown_relationship_takes_the_careful_first_step(
    make_harness: Callable[..., Harness], relationship: Any
) -> None:
    referrer = {**OLE, "relationship": relationship} if relationship else OLE
    h = make_harness()
    messages = run(h, event("e1", data={"referrer": referrer}, **lead_fields(source="referral")))
    assert steps(messages) == WEAK_STEPS
    first = messages[0]
    assert first["Subject"] == "An introduction via Ole Holm"
    text = text_of(first)
    assert "Ole Holm at Holm & Co passed on your name" in text
    # Article 002: do not overstate the link; bring credibility and the strongest
    # contact method (a call together with the referrer).
    if relationship == "weak":
        assert "someone you may know only a little is not much to go on" in text
    else:
        assert "Rather than ask you to take that on trust" in text
    assert "a short call together with Ole Holm or one of our clients" in text
    assert "said after working with us" in text
    assert "suggested we get in touch with you" not in text  # not the warm intro
    assert "met once" not in text  # free text is never printed
    # A person is asked first (article 002): to call a weak referral, to find out an
    # unknown relationship; one internal email each, not to the lead.
    if relationship == "weak":
        assert notes(h) == [("call-weak", "Call Ann today: weak referral via Ole Holm")]
    else:
        assert notes(h) == [("find-out", "Referral Ann: how does Ole Holm know them?")]


def test_the_introduction_waits_for_the_referrer(make_harness: Callable[..., Harness]) -> None:
    """Two business days, so the referrer's own word comes first (article 002)."""
    h = make_harness()
    start = h.clock.now().timestamp()
    run(h, event("e1", data={"referrer": STRONG}, **lead_fields(source="referral")))
    ledger = h.rt.store.ledger.entries("lead-1")
    sent = {
        field.split(":", 2)[2]: float(state.partition(":")[2]) for field, state in ledger.items()
    }
    assert sent["intro"] - start >= 2 * DAY


def test_referred_lead_never_gets_value_first_and_no_piece_twice(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    messages = run(h, event("e1", data={"referrer": STRONG}, **lead_fields(source="referral")))
    assert h.rt.store.enrollment("lead-1", "value-first") is None
    urls = [url for m in messages for url in URL.findall(text_of(m)) if "/unsubscribe/" not in url]
    assert len(urls) == len(set(urls)) == 3  # intro's story, case study, guide


def test_referred_lead_that_fails_a_fit_rule_is_declined_not_introduced(
    make_harness: Callable[..., Harness],
) -> None:
    fields = lead_fields(source="referral", attributes={"budget": 100})
    messages = run(make_harness(), event("e1", data={"referrer": OLE}, **fields))
    assert steps(messages) == [("decline", "refusal")]


@pytest.mark.parametrize(
    ("locale", "relationship", "subject", "greeting"),
    [
        ("da-DK", "strong", "Ole Holm foreslog, at vi tog en snak", "Hej Ann,"),
        ("da-DK", "weak", "En introduktion via Ole Holm", "Hej Ann,"),
        ("fi", "strong", "Ole Holm ehdotti, että juttelisimme", "Hei Ann,"),
        ("fi", "weak", "Ole Holm antoi meille nimesi", "Hei Ann,"),
        # A language without a translation gets English, for the whole email.
        ("xx", "strong", "Ole Holm suggested we talk", "Hi Ann,"),
    ],
)
def test_referral_intro_in_the_lead_language(
    make_harness: Callable[..., Harness],
    locale: str,
    relationship: str | None,
    subject: str,
    greeting: str,
) -> None:
    referrer = {**OLE, "relationship": relationship} if relationship else OLE
    fields = lead_fields(source="referral", locale=locale)
    messages = run(make_harness(), event("e1", data={"referrer": referrer}, **fields))
    first = messages[0]
    assert first["Subject"] == subject
    text = text_of(first)
    assert text.startswith(greeting)
    assert "Ole Holm" in text
