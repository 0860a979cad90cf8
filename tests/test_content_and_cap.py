"""Value-first content and the frequency cap, end to end on a real Redis with real
dramatiq workers.

A lead never gets the same content piece twice, whichever sequences it is in; with a
frequency cap, touches from several nurture sequences queue up behind each other (in
the order they fell due, none lost) while declines and transactional emails pass; and
each lead reads its own language as far as translations exist.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.harness import Harness, event, running
from worker.clock import ManualClock
from worker.enrollment import touch_id

#: Messages run inline on dramatiq's StubBroker (see tests/harness.py): no worker threads.
INLINE_QUEUE = True


CPH = ZoneInfo("Europe/Copenhagen")
DAY = 86400.0
CAP = 48 * 3600.0
URL = re.compile(r"https://example\.com/\S+")

VALUE_FIRST = ["outcome-story", "case-study", "testimonial", "how-to-guide"]


def inbound(**fields: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "first_name": "Ann",
        "company": "Berg ApS",
        "source": "website",
        "timezone": "Europe/Copenhagen",
        "attributes": {"industry": "saas", "problem": "churn", "budget": 5000},
    }
    lead.update(fields)
    return lead


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(message: EmailMessage) -> str | None:
    part = message.get_body(("html",))
    return None if part is None else str(part.get_content())


def content_urls(message: EmailMessage) -> set[str]:
    """Links to content pieces in an email (the footer links elsewhere)."""
    return set(URL.findall(text_of(message)))


def for_lead(h: Harness, lead: str = "lead-1") -> list[EmailMessage]:
    return [m for m in h.messages() if m["X-Nurture-Lead"] == lead]


def sent_times(h: Harness, lead: str = "lead-1") -> list[tuple[float, str, str]]:
    """(when, sequence, step) of every send in the lead's ledger, oldest first."""
    ledger = h.rt.store.ledger.entries(lead)
    out = []
    for field, state in ledger.items():
        sequence, _generation, step = field.split(":", 2)
        kind, _, stamp = state.partition(":")
        assert kind == "sent", (field, state)
        out.append((float(stamp), sequence, step))
    return sorted(out)


def write_sequence(catalog_dirs: dict[str, Path], name: str, text: str) -> None:
    (catalog_dirs["sequences"] / f"{name}.yaml").write_text(text, encoding="utf-8")


def run_days(h: Harness, days: float) -> None:
    h.run_until(h.clock.now().timestamp() + days * DAY)


# -- no content twice ----------------------------------------------------------------

# A second value sequence for the same leads, starting at the same moment as
# value-first and asking for more case studies than the library has in English.
VALUE_EXTRA = """\
id: value-extra
description: A second value sequence for inbound leads
trigger:
  event: lead.created
  when: {source: {not_in: [referral, outbound]}}
exit_on: [lead.replied]
send_window: {days: mon-fri, hours: "09:00-17:00"}
steps:
  - {id: story, wait: 10m, template: value/outcome_story}
  - {id: case-1, wait: 1d, template: value/case_study}
  - {id: words, wait: 1d, template: value/testimonial}
  - {id: case-2, wait: 1d, template: value/case_study}
  - {id: guide, wait: 1d, template: value/guide}
  - {id: case-3, wait: 1d, template: value/case_study}
  - {id: case-4, wait: 1d, template: value/case_study}
"""


@pytest.mark.parametrize("cap", [0.0, CAP], ids=["no-cap", "cap-48h"])
def test_no_content_piece_twice_across_two_sequences(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path], cap: float
) -> None:
    write_sequence(catalog_dirs, "value-extra", VALUE_EXTRA)
    h = make_harness(frequency_cap=cap)
    with running(h):
        h.emit(event("e1", **inbound()))
        h.settle()
        run_days(h, 120)
    messages = for_lead(h)
    assert sorted((m["X-Nurture-Sequence"], m["X-Nurture-Step"]) for m in messages) == sorted(
        [("value-first", s) for s in VALUE_FIRST]
        + [("value-extra", s) for s in ("story", "case-1", "words", "case-2", "guide")]
        + [("value-extra", "case-3"), ("value-extra", "case-4")]
    )
    seen: dict[str, str] = {}
    for message in messages:
        where = f"{message['X-Nurture-Sequence']}/{message['X-Nurture-Step']}"
        for url in content_urls(message):
            assert url not in seen, f"{url} sent twice: {seen[url]} and {where}"
            seen[url] = where
    # Five case-study emails, four English case studies: the fifth uses its fallback
    # text instead of a repeat.
    case_emails = [m for m in messages if "case" in m["X-Nurture-Step"]]
    assert len(case_emails) == 5
    fallbacks = [
        m
        for m in case_emails
        if "our clients' stories have in common" in " ".join(text_of(m).split())
    ]
    assert len(fallbacks) == 1
    # What the worker remembers is exactly what was sent.
    library = h.rt.catalog.current.renderer.content
    assert library is not None
    received = h.rt.store.ledger.received("lead-1")
    assert {library.by_id[i].url for i in received} == set(seen)


def test_no_content_twice_when_a_lead_is_in_value_first_and_referral_intro(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound()))
        h.advance(timedelta(minutes=10))
        # The CRM later learns the lead was referred: a new lead.created with the referrer.
        h.emit(
            event(
                "e2",
                email=None,
                source="referral",
                data={"referrer": {"name": "Ole Holm", "company": "Holm & Co"}},
            )
        )
        h.settle()
        run_days(h, 60)
    # The relationship is not known: the owner is asked to find out (an internal note).
    notes = [m["X-Nurture-Step"] for m in for_lead(h) if m["X-Nurture-Internal"]]
    assert notes == ["find-out"]
    messages = [m for m in for_lead(h) if not m["X-Nurture-Internal"]]
    assert {m["X-Nurture-Sequence"] for m in messages} == {"value-first", "referral-intro"}
    assert len(messages) == 4 + 3  # value-first, and referral intro + case study + guide
    urls = [url for m in messages for url in content_urls(m)]
    assert len(urls) == len(set(urls)) >= 6


# -- the frequency cap ----------------------------------------------------------------

# Two more nurture sequences on the same trigger. Their ids sort before value-first
# and in the opposite order of their first touches, so an order decided by id (not
# by when touches fell due) shows.
EXTRA_A = """\
id: aa-extra
description: Third sequence, first touch 30 minutes in
trigger: {event: lead.created}
send_window: {days: mon-fri, hours: "09:00-17:00"}
steps:
  - {id: a1, wait: 30m, template: value/guide}
  - {id: a2, wait: 1d, template: value/testimonial}
  - {id: a3, wait: 2d, template: value/case_study}
"""
EXTRA_M = """\
id: mm-extra
description: Second sequence, first touch 20 minutes in
trigger: {event: lead.created}
send_window: {days: mon-fri, hours: "09:00-17:00"}
steps:
  - {id: m1, wait: 20m, template: value/outcome_story}
  - {id: m2, wait: 1d, template: value/case_study}
  - {id: m3, wait: 1 business days, template: value/guide}
"""


def run_recording_first_due(h: Harness, until: float) -> dict[str, float]:
    """Like ``run_until``, noting the time each touch first fell due (before any cap)."""
    first_due: dict[str, float] = {}
    while True:
        for member, score in h.rt.store.schedule.entries():
            first_due.setdefault(member, score)
        due = h.rt.store.schedule.first_due()
        if due is None or due > until:
            return first_due
        if due > h.clock.now().timestamp():
            h.clock.set(datetime.fromtimestamp(due, h.clock.now().tzinfo))
        h.settle()


@pytest.mark.parametrize("leads", [1, 3])
def test_frequency_cap_across_three_overlapping_sequences(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path], leads: int
) -> None:
    write_sequence(catalog_dirs, "aa-extra", EXTRA_A)
    write_sequence(catalog_dirs, "mm-extra", EXTRA_M)
    h = make_harness(frequency_cap=CAP)
    lead_ids = [f"lead-{i}" for i in range(leads)]
    with running(h):
        for lead_id in lead_ids:
            h.emit(
                event(f"c-{lead_id}", lead_id=lead_id, email=f"{lead_id}@example.com", **inbound())
            )
        h.settle()
        start = h.clock.now().timestamp()
        first_due = run_recording_first_due(h, start + 200 * DAY)
    expected = {
        "value-first": VALUE_FIRST,
        "mm-extra": ["m1", "m2", "m3"],
        "aa-extra": ["a1", "a2", "a3"],
    }
    for lead_id in lead_ids:
        sends = sent_times(h, lead_id)
        # Nothing lost: every step of every sequence went out, each sequence in order.
        for sequence, steps in expected.items():
            assert [step for _, seq, step in sends if seq == sequence] == steps
            enrollment = h.rt.store.enrollment(lead_id, sequence)
            assert enrollment is not None and enrollment.state == "done"
        # At most one nurture touch per 48 hours, across all three sequences.
        times = [when for when, _, _ in sends]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= CAP, [g / 3600 for g in gaps]
        # Each touch inside the send window.
        for when in times:
            local = datetime.fromtimestamp(when, CPH)
            assert local.weekday() < 5 and 9 <= local.hour < 17, local
        # In order: touches held back by the cap go out in the order they fell due.
        order = [first_due[touch_id(seq, 1, step, lead_id)] for _, seq, step in sends]
        assert order == sorted(order), [
            (seq, step, datetime.fromtimestamp(first_due[touch_id(seq, 1, step, lead_id)], CPH))
            for _, seq, step in sends
        ]
        # The cap did its work without idling: after the first send, each touch goes out
        # at the first open moment the cap and its own wait allow.
        assert times[0] == pytest.approx(start + 600)
        assert (times[-1] - times[0]) / CAP < len(times) + 4


def _single_step(sequence_id: str, trigger: str, wait: str) -> str:
    return (
        f"id: {sequence_id}\n"
        f"description: One touch\n"
        f"trigger: {{event: {trigger}}}\n"
        'send_window: {days: mon-fri, hours: "09:00-17:00"}\n'
        f"steps:\n  - {{id: only, wait: {wait}, template: value/outcome_story}}\n"
    )


def test_held_back_touch_goes_before_one_that_falls_due_at_the_same_moment(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    """A touch held back since Thursday and one that first fell due over the weekend
    both wait for Monday 09:00; the one that has waited longer goes first, even though
    the other sequence's id sorts first."""
    (catalog_dirs["sequences"] / "value-first.yaml").unlink()  # only the three below
    write_sequence(catalog_dirs, "mm-first", _single_step("mm-first", "lead.created", "10m"))
    write_sequence(catalog_dirs, "yy-held", _single_step("yy-held", "lead.created", "20m"))
    write_sequence(catalog_dirs, "aa-later", _single_step("aa-later", "webinar.attended", "1d"))
    thursday = datetime(2026, 11, 26, 9, 0, tzinfo=CPH)
    h = make_harness(frequency_cap=CAP, clock=ManualClock(thursday))
    with running(h):
        h.emit(event("e1", **inbound()))
        h.settle()
        h.advance(timedelta(minutes=10))  # mm-first goes out, Thursday 09:10
        h.advance(timedelta(minutes=10))  # yy-held is held back until Monday 09:00
        h.clock.set(datetime(2026, 11, 27, 10, 0, tzinfo=CPH))
        # Friday: a new sequence starts; its touch falls due Saturday -> Monday 09:00.
        h.emit(event("e2", "webinar.attended", email=None))
        h.settle()
        run_days(h, 30)
    sends = [(datetime.fromtimestamp(when, CPH), seq) for when, seq, _ in sent_times(h)]
    assert sends == [
        (datetime(2026, 11, 26, 9, 10, tzinfo=CPH), "mm-first"),
        (datetime(2026, 11, 30, 9, 0, tzinfo=CPH), "yy-held"),
        (datetime(2026, 12, 2, 9, 0, tzinfo=CPH), "aa-later"),
    ]


def test_decline_is_exempt_from_the_cap_and_nurture_stops(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    write_sequence(catalog_dirs, "aa-extra", EXTRA_A)
    h = make_harness(frequency_cap=CAP)
    with running(h):
        h.emit(event("e1", **inbound()))
        h.settle()
        h.advance(timedelta(minutes=10))
        h.advance(timedelta(minutes=20))  # aa-extra's first touch is held back by the cap
        assert [s for _, _, s in sent_times(h)] == ["outcome-story"]
        h.emit(event("e2", "lead.disqualified", email=None, data={"reason": "budget"}))
        h.settle()
        run_days(h, 30)
    sends = sent_times(h)
    assert [(seq, step) for _, seq, step in sends] == [
        ("value-first", "outcome-story"),
        ("decline", "refusal"),
    ]
    # The refusal came well inside the 48 hours after the nurture touch.
    assert sends[1][0] - sends[0][0] < 24 * 3600


CONFIRMATION = """\
{% block subject %}You are registered for the webinar{% endblock %}
{% block text %}
Hi {{ lead | first_name("there") }},

You are registered. We will send the link on the day.
{% endblock %}
"""

WEBINAR_CONFIRM = """\
id: webinar-confirm
kind: transactional
description: Confirms a webinar registration
trigger: {event: webinar.registered}
steps:
  - {id: confirm, wait: 0s, template: confirm/webinar}
"""


def test_transactional_email_is_exempt_and_does_not_use_up_the_cap(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    (catalog_dirs["templates"] / "confirm").mkdir()
    (catalog_dirs["templates"] / "confirm" / "webinar.j2").write_text(CONFIRMATION)
    write_sequence(catalog_dirs, "webinar-confirm", WEBINAR_CONFIRM)
    h = make_harness(frequency_cap=CAP)
    with running(h):
        h.emit(event("e1", **inbound()))
        h.settle()
        h.advance(timedelta(minutes=10))  # outcome-story, Monday 09:10 UTC
        h.advance(timedelta(minutes=20))
        h.emit(event("e2", "webinar.registered", email=None))
        h.settle()
        # Sent at once although a nurture touch went out 20 minutes ago.
        first = sent_times(h)
        assert [s for _, _, s in first] == ["outcome-story", "confirm"]
        # Wednesday 11:00 UTC, 2 days later: a second registration's confirmation.
        h.clock.set(h.clock.now() + timedelta(days=2, hours=1, minutes=30))
        h.emit(event("e3", "webinar.registered", email=None))
        h.settle()
        run_days(h, 30)
    # The second registration's enrollment dropped the ledger entry of the first
    # (an ended generation's entries go when the lead enrolls again): read before.
    sends = sorted({*first, *sent_times(h)})
    assert len(h.sent()) == len(sends)
    steps = [(seq, step) for _, seq, step in sends]
    assert steps[:4] == [
        ("value-first", "outcome-story"),
        ("webinar-confirm", "confirm"),
        ("webinar-confirm", "confirm"),
        ("value-first", "case-study"),
    ]
    # The confirmations did not count: the case study goes out when it falls due
    # (3 business days after Monday 09:10: Thursday 09:10 UTC), not 48 h after Wednesday.
    case_study = next(when for when, seq, step in sends if step == "case-study")
    assert datetime.fromtimestamp(case_study, CPH) == datetime(2026, 11, 26, 10, 10, tzinfo=CPH)


# -- languages ------------------------------------------------------------------------

ENGLISH = ("Hi Ann", "Warm regards", "You are getting this because")
DANISH = ("Hej Ann", "Venlig hilsen", "Du får denne mail")
FINNISH = ("Hei Ann", "Ystävällisin terveisin")


def language_of(message: EmailMessage) -> str:
    text = text_of(message)
    found = [
        name
        for name, marks in (("en", ENGLISH), ("da", DANISH), ("fi", FINNISH))
        if any(mark in text for mark in marks)
    ]
    assert len(found) == 1, (found, text)
    marks = {"en": ENGLISH, "da": DANISH, "fi": FINNISH}[found[0]]
    assert all(mark in text for mark in marks[:2]), text
    return found[0]


def test_danish_lead_reads_danish_all_the_way_through(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(locale="da-DK")))
        h.settle()
        run_days(h, 30)
    messages = for_lead(h)
    assert [m["X-Nurture-Step"] for m in messages] == VALUE_FIRST
    for message in messages:
        text = text_of(message)
        assert language_of(message) == "da", text
        assert "Du får denne mail" in text  # the Danish footer
        assert not any(mark in text for mark in ENGLISH)
        html = html_of(message)
        assert html is not None and '<html lang="da">' in html and "Afmeld med ét klik" in html
        # The piece each email points to is a Danish one.
        urls = content_urls(message)
        assert urls and all("/da/" in url for url in urls), (message["Subject"], urls)
    subjects = [str(m["Subject"]) for m in messages]
    assert not any(
        s.startswith(("How they did it", "In their words", "Free to use")) for s in subjects
    )


def test_danish_lead_gets_a_danish_refusal(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(locale="da-DK", attributes={"budget": 100})))
        h.settle()
        run_days(h, 7)
    (refusal,) = for_lead(h)
    text = " ".join(text_of(refusal).split())
    assert refusal["Subject"] == "Tak for din henvendelse, Ann"
    assert "Tak, fordi du tog kontakt til os, og tak for den tillid" in text
    assert "Det budget, du har i tankerne" in text
    assert "Vi ønsker dig held og lykke med det" in text
    assert "Du får denne mail" in text
    assert "/da/guides/" in text  # the Danish free guide for the budget reason


def test_finnish_lead_reads_finnish_all_the_way_through(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(locale="fi-FI", timezone="Europe/Helsinki")))
        h.settle()
        run_days(h, 30)
    messages = for_lead(h)
    assert [m["X-Nurture-Step"] for m in messages] == VALUE_FIRST
    # Every shipped email has a Finnish version, and every piece a Finnish one.
    assert [language_of(m) for m in messages] == ["fi"] * len(VALUE_FIRST)
    for message in messages:
        urls = content_urls(message)
        assert urls and all("/fi/" in url for url in urls), (message["Subject"], urls)
        html = html_of(message)
        assert html is not None and '<html lang="fi">' in html
        assert "Saat tämän viestin, koska otit meihin yhteyttä" in text_of(message)


def test_unknown_locale_falls_back_to_english(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(locale="xx")))
        h.emit(event("e2", lead_id="lead-2", email="b@example.com", **inbound(locale="xx-YY")))
        h.settle()
        run_days(h, 30)
    for lead in ("lead-1", "lead-2"):
        messages = for_lead(h, lead)
        assert [m["X-Nurture-Step"] for m in messages] == VALUE_FIRST
        for message in messages:
            assert language_of(message) == "en"
            assert not any("/da/" in u or "/fi/" in u for u in content_urls(message))
            html = html_of(message)
            assert html is not None and '<html lang="en">' in html
