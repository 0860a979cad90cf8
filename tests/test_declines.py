"""Fit rules and polite declines, end to end on a real Redis with real dramatiq workers.

Every shipped fit rule is tried with a lead that matches and a near miss; a match (or a
CRM ``lead.disqualified``) must end the lead's nurture and bring exactly one refusal
email built as article 003's package: thanks, a clear no with the reason's own
paragraph, and a warm close with resources. The refusal waits a human-looking 2-20 h,
goes out in business hours, never to a suppressed address, and ``lead.requalified``
lets a lead back into nurture without being judged again on the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.harness import Harness, event, running
from worker.enrollment import touch_id
from worker.suppression import suppress_address

#: Messages run inline on dramatiq's StubBroker (see tests/harness.py): no worker threads.
INLINE_QUEUE = True


CPH = ZoneInfo("Europe/Copenhagen")
DAY = 86400.0

BASE_ATTRIBUTES = {"industry": "saas", "problem": "churn", "budget": 5000}


def inbound(**attributes: Any) -> dict[str, Any]:
    """Lead fields of an inbound lead that fits, with ``attributes`` laid over."""
    return {
        "first_name": "Ann",
        "company": "Berg ApS",
        "source": "website",
        "timezone": "Europe/Copenhagen",
        "attributes": {**BASE_ATTRIBUTES, **attributes},
    }


# The seven shipped rules (sequences/fit.yaml): reason, attributes that match, a near
# miss that must not match, a phrase only that reason's "no" paragraph has, and a phrase
# only that reason's resources have.
RULES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    (
        "guarantee",
        {"requests_guarantee": True},
        {"requests_guarantee": False},
        "You asked for a guaranteed result",
        "two references from clients",
    ),
    (
        "out_of_scope",
        {"need": "legal"},
        {"need": "marketing"},
        "outside the work we do well",
        "chamber of commerce usually keeps a list of specialists",
    ),
    (
        "already_helped",
        {"already_helped": True},
        {"already_helped": False},
        "you already have what you need to carry on without us",
        "a peer group of people in the same role",
    ),
    (
        "third_party",
        {"pushed_by_third_party": True},
        {"pushed_by_third_party": False},
        "the person who wants the change reaches out themselves",
        "A trusted peer or a mentor",
    ),
    (
        "ethics",
        {"ethics_flag": True},
        {"ethics_flag": False},
        # Declined without naming the reason (article 003): the general paragraphs.
        "we are not the right fit for what you need at the moment",
        "a local business development centre can point you",
    ),
    (
        "boundaries",
        {"demands_after_hours": True},
        {"demands_after_hours": False},
        "The availability you need, at any hour of the day",
        "an agency that offers an on-call service",
    ),
    (
        "budget",
        {"budget": 499},
        {"budget": 500},
        "The budget you have in mind",
        "business development centres",
    ),
]
GENERAL_NO = "we are not the right fit for what you need at the moment"
GENERAL_RESOURCE = "a local business development centre can point you"
REASON_PHRASES = {reason: (no, help_) for reason, _m, _n, no, help_ in RULES}
REASONS = [reason for reason, *_ in RULES]


def text_of(message: EmailMessage) -> str:
    """The plain-text part with line breaks and runs of spaces folded, for phrase checks."""
    part = message.get_body(("plain",))
    assert part is not None
    return " ".join(str(part.get_content()).split())


def refusals(h: Harness, lead: str = "lead-1") -> list[EmailMessage]:
    return [
        m
        for m in h.messages()
        if m["X-Nurture-Lead"] == lead and m["X-Nurture-Sequence"] == "decline"
    ]


def steps_sent(h: Harness, lead: str = "lead-1") -> list[tuple[str, str]]:
    return [(seq, step) for lid, seq, step in h.sent() if lid == lead]


def sent_times(h: Harness, lead: str = "lead-1") -> dict[tuple[str, str], float]:
    """(sequence, step) -> when it was sent, from the lead's send ledger."""
    ledger = h.rt.store.ledger.entries(lead)
    out = {}
    for field, state in ledger.items():
        sequence, _generation, step = field.split(":", 2)
        kind, _, stamp = state.partition(":")
        if kind == "sent":
            out[(sequence, step)] = float(stamp)
    return out


def assert_refusal_package(message: EmailMessage, reason: str | None) -> None:
    """The three parts of article 003's refusal, with the paragraphs of ``reason``."""
    text = text_of(message)
    if reason == "already_helped":
        # A past client gets a personal note rather than thanks for reaching out.
        assert message["Subject"] == "Good to hear from you again, Ann"
        assert "It is good to hear from you again, and thank you for thinking of us" in text
    else:
        assert message["Subject"] == "Thank you for getting in touch, Ann"
        # 1. Thanks for reaching out, and for the trust.
        assert "Thank you for reaching out to us, and for trusting us" in text
        # 2. A clear no; the reason's own paragraph and no other reason's.
        assert "We have thought about it carefully, and we" in text
    no, help_ = REASON_PHRASES.get(reason or "", (GENERAL_NO, GENERAL_RESOURCE))
    assert no in text
    assert help_ in text
    for other, (other_no, other_help) in REASON_PHRASES.items():
        if other != reason and (other_no, other_help) != (no, help_):
            assert other_no not in text, f"{other}'s paragraph in a {reason} refusal"
            assert other_help not in text
    if reason in REASON_PHRASES and reason != "ethics":
        assert GENERAL_NO not in text
    # 3. A warm close with self-help and a free resource from the content library.
    assert "We don't want to leave you empty-handed" in text
    assert "A free guide to keep:" in text
    assert "https://example.com/guides/" in text
    assert "our door is open" in text
    # Still a proper marketing email: unsubscribe link and postal address.
    assert "https://nurture.example/unsubscribe/" in text
    assert "Vesterbrogade 1" in text


def run_days(h: Harness, days: float) -> None:
    h.run_until(h.clock.now().timestamp() + days * DAY)


# -- each fit rule ------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "match", "near_miss", "_no", "_help"), RULES, ids=REASONS)
def test_fit_rule_match_on_created_disqualifies_with_one_refusal(
    make_harness: Callable[..., Harness],
    reason: str,
    match: dict[str, Any],
    near_miss: dict[str, Any],
    _no: str,
    _help: str,
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(**match)))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified == reason
        # Never enrolled in nurture; only the refusal is pending.
        assert h.rt.store.enrollment("lead-1", "value-first") is None
        assert [m.split("\x1f")[0] for m, _ in h.rt.store.scheduled_for("lead-1")] == ["decline"]
        run_days(h, 30)
    assert steps_sent(h) == [("decline", "refusal")]
    assert_refusal_package(refusals(h)[0], reason)


@pytest.mark.parametrize(("reason", "match", "near_miss", "_no", "_help"), RULES, ids=REASONS)
def test_fit_rule_near_miss_is_nurtured_not_declined(
    make_harness: Callable[..., Harness],
    reason: str,
    match: dict[str, Any],
    near_miss: dict[str, Any],
    _no: str,
    _help: str,
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(**near_miss)))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified is None
        h.run_until(h.clock.now().timestamp() + 30 * DAY)
    assert [step for seq, step in steps_sent(h)] == [
        "outcome-story",
        "case-study",
        "testimonial",
        "how-to-guide",
    ]
    assert refusals(h) == []


@pytest.mark.parametrize(("reason", "match", "near_miss", "_no", "_help"), RULES, ids=REASONS)
def test_fit_rule_match_on_update_ends_running_nurture(
    make_harness: Callable[..., Harness],
    reason: str,
    match: dict[str, Any],
    near_miss: dict[str, Any],
    _no: str,
    _help: str,
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound()))
        h.advance(timedelta(minutes=10))
        assert steps_sent(h) == [("value-first", "outcome-story")]
        pending = h.rt.store.scheduled_for("lead-1")
        assert [m.split("\x1f")[2] for m, _ in pending] == ["case-study"]
        # The CRM learns more about the lead: only the changed attribute is sent.
        h.emit(event("e2", "lead.updated", email=None, attributes=match))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified == reason
        enrollment = h.rt.store.enrollment("lead-1", "value-first")
        assert enrollment is not None
        assert (enrollment.state, enrollment.reason) == ("exited", "disqualified")
        # The pending case study is gone from the schedule; only the refusal waits.
        assert pending[0][0] not in [m for m, _ in h.rt.store.scheduled_for("lead-1")]
        assert h.rt.store.schedule.due_at([pending[0][0]]) == [None]
        run_days(h, 30)
    assert steps_sent(h) == [("value-first", "outcome-story"), ("decline", "refusal")]
    assert_refusal_package(refusals(h)[0], reason)


def test_first_matching_rule_wins(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        # Matches "ethics" and "cannot-pay"; ethics comes first in fit.yaml.
        h.emit(event("e1", **inbound(budget=100, ethics_flag=True)))
        h.settle()
        run_days(h, 7)
    lead = h.rt.store.get_lead("lead-1")
    assert lead is not None and lead.disqualified == "ethics"
    assert_refusal_package(refusals(h)[0], "ethics")


def test_a_lead_without_the_attributes_is_not_disqualified(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", first_name="Ann", timezone="Europe/Copenhagen"))
        h.advance(timedelta(minutes=10))
        run_days(h, 30)
    assert refusals(h) == []
    assert len(steps_sent(h)) == 4


# -- CRM disqualification -----------------------------------------------------------


@pytest.mark.parametrize("reason", [*REASONS, None, "competitor"])
def test_crm_disqualification_ends_nurture_and_sends_one_refusal(
    make_harness: Callable[..., Harness], reason: str | None
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound()))
        h.advance(timedelta(minutes=10))
        h.emit(
            event(
                "e2",
                "lead.disqualified",
                email=None,
                data={"reason": reason} if reason else None,
            )
        )
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified == (reason or "unspecified")
        assert [m.split("\x1f")[0] for m, _ in h.rt.store.scheduled_for("lead-1")] == ["decline"]
        run_days(h, 30)
    assert steps_sent(h) == [("value-first", "outcome-story"), ("decline", "refusal")]
    # An unknown reason gets the general paragraphs, like no reason at all.
    assert_refusal_package(refusals(h)[0], reason if reason in REASON_PHRASES else None)


def test_one_refusal_however_often_and_by_whom_disqualified(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        # A fit rule disqualifies first...
        h.emit(event("e1", **inbound(budget=100)))
        h.settle()
        # ...then the CRM twice (another reason), and the queue redelivers one of them.
        h.emit(event("e2", "lead.disqualified", email=None, data={"reason": "ethics"}))
        h.emit(event("e3", "lead.disqualified", email=None, data={"reason": "ethics"}))
        h.rt.actors.process_events.send(
            [event("e2", "lead.disqualified", email=None, data={"reason": "ethics"}).to_json()]
        )
        h.settle()
        assert len(h.rt.store.scheduled_for("lead-1")) == 1
        run_days(h, 3)
        assert len(refusals(h)) == 1
        # After the refusal went out: another disqualification and another rule match.
        h.emit(event("e4", "lead.disqualified", email=None, data={"reason": "budget"}))
        h.emit(event("e5", "lead.updated", email=None, attributes={"need": "legal"}))
        h.settle()
        run_days(h, 30)
    assert steps_sent(h) == [("decline", "refusal")]
    # The refusal speaks to the first reason it was given.
    assert_refusal_package(refusals(h)[0], "budget")


def test_disqualified_lead_gets_no_nurture_from_new_triggers(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", "lead.disqualified", data={"reason": "budget"}, **inbound()))
        h.settle()
        h.emit(event("e2", **inbound()))  # a lead.created after the disqualification
        h.settle()
        run_days(h, 30)
    assert steps_sent(h) == [("decline", "refusal")]


# -- when the refusal goes out --------------------------------------------------------


def test_refusal_waits_2_to_20_hours_and_goes_out_in_business_hours(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    window = h.rt.catalog.current.catalog.sequences["decline"].send_window
    assert window is not None
    disqualified_at: dict[str, tuple[float, ZoneInfo]] = {}
    zones = [CPH, ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")]
    with running(h):
        # Twenty leads disqualified 7 hours apart: nights, a weekend, each zone.
        for i in range(20):
            lead_id = f"lead-{i}"
            zone = zones[i % 3]
            h.emit(
                event(
                    f"d{i}",
                    "lead.disqualified",
                    lead_id,
                    email=f"lead{i}@example.com",
                    data={"reason": "budget"},
                    first_name="Ann",
                    timezone=str(zone),
                )
            )
            h.settle()
            disqualified_at[lead_id] = (h.clock.now().timestamp(), zone)
            target = h.clock.now() + timedelta(hours=7)
            h.run_until(target.timestamp())
            h.clock.set(target)
            h.settle()
        run_days(h, 7)
    delays = []
    for lead_id, (at, zone) in disqualified_at.items():
        sent = sent_times(h, lead_id)
        assert list(sent) == [("decline", "refusal")], lead_id
        when = sent[("decline", "refusal")]
        local = datetime.fromtimestamp(when, zone)
        # A human-looking delay: never sooner than 2 hours...
        assert when - at >= 2 * 3600, lead_id
        # ...inside business hours in the lead's own zone...
        assert local.weekday() < 5 and 9 <= local.hour < 17, (lead_id, local)
        # ...and no later than the first opening after 20 hours.
        latest = window.next_open(datetime.fromtimestamp(at + 20 * 3600, UTC), zone)
        assert when <= latest.timestamp(), (lead_id, local)
        delays.append(when - at)
    # Not the same delay for everyone: it should not read as a robot's reply.
    assert len({round(d) for d in delays}) > 10


# -- never to a suppressed address ---------------------------------------------------


def test_no_refusal_to_an_unsubscribed_lead(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound()))
        h.emit(event("e2", "lead.unsubscribed", email=None))
        h.settle()
        h.emit(event("e3", "lead.disqualified", email=None, data={"reason": "budget"}))
        h.settle()
        run_days(h, 30)
    assert h.sent() == []


def test_no_refusal_to_a_bounced_address(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        # The address bounced (for another lead, before this one was even created).
        suppress_address(h.rt, "Ann@Example.com", "bounce")
        h.emit(event("e1", **inbound(budget=100)))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified == "budget"
        run_days(h, 30)
    assert h.sent() == []


@pytest.mark.parametrize("how", ["unsubscribed", "bounced"])
def test_pending_refusal_is_dropped_when_the_address_is_suppressed(
    make_harness: Callable[..., Harness], how: str
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(budget=100)))
        h.settle()
        assert len(h.rt.store.scheduled_for("lead-1")) == 1  # the refusal waits 2-20 h
        if how == "unsubscribed":
            h.emit(event("e2", "lead.unsubscribed", email=None))
        else:
            suppress_address(h.rt, "ann@example.com", "bounce")
        h.settle()
        run_days(h, 30)
    assert h.sent() == []
    enrollment = h.rt.store.enrollment("lead-1", "decline")
    assert enrollment is not None and enrollment.state == "exited"


# -- requalification ------------------------------------------------------------------


def test_requalified_lead_is_nurtured_and_not_judged_again_on_the_same_data(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(budget=300)))
        h.settle()
        run_days(h, 3)
        assert steps_sent(h) == [("decline", "refusal")]
        # A person decides this lead is worth it after all.
        h.emit(event("e2", "lead.requalified", email=None))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified is None
        # A new trigger with the very same data enrolls it; the rule is not applied again.
        h.emit(event("e3", **inbound(budget=300)))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified is None
        enrollment = h.rt.store.enrollment("lead-1", "value-first")
        assert enrollment is not None and enrollment.active
        h.advance(timedelta(minutes=10))
        # An update that does not touch what the rule looks at changes nothing.
        h.emit(event("e4", "lead.updated", email=None, company="Berg & Sons ApS"))
        h.emit(event("e5", "lead.updated", email=None, attributes={"industry": "agency"}))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified is None
        run_days(h, 30)
    assert steps_sent(h) == [
        ("decline", "refusal"),
        ("value-first", "outcome-story"),
        ("value-first", "case-study"),
        ("value-first", "testimonial"),
        ("value-first", "how-to-guide"),
    ]


def test_requalified_lead_whose_data_changes_is_judged_again_without_a_second_refusal(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(budget=300)))
        h.settle()
        run_days(h, 3)
        h.emit(event("e2", "lead.requalified", email=None))
        h.settle()  # a person requalifies; then the CRM sends news
        h.emit(event("e3", **inbound(budget=300)))
        h.advance(timedelta(minutes=10))
        assert steps_sent(h)[-1] == ("value-first", "outcome-story")
        # The budget the rule looks at changes (and still fails it): judged again.
        h.emit(event("e4", "lead.updated", email=None, attributes={"budget": 200}))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.disqualified == "budget"
        enrollment = h.rt.store.enrollment("lead-1", "value-first")
        assert enrollment is not None and enrollment.state == "exited"
        assert h.rt.store.scheduled_for("lead-1") == []
        run_days(h, 30)
    # Out of nurture again, but never a second refusal.
    assert steps_sent(h) == [("decline", "refusal"), ("value-first", "outcome-story")]


def test_requalified_lead_that_fits_then_fails_again_is_judged_again(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound(budget=300)))
        h.settle()
        run_days(h, 3)
        h.emit(event("e2", "lead.requalified", email=None))
        h.settle()  # a person requalifies; then the CRM sends news
        h.emit(event("e3", "lead.updated", email=None, attributes={"budget": 2000}))
        h.settle()
        # Back to the budget that was waived once: the waiver was for that moment.
        h.emit(event("e4", "lead.updated", email=None, attributes={"budget": 300}))
        h.settle()
    lead = h.rt.store.get_lead("lead-1")
    assert lead is not None and lead.disqualified == "budget"


def test_requalified_before_the_refusal_went_out_withdraws_it(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound()))
        h.emit(event("e2", "lead.disqualified", email=None, data={"reason": "budget"}))
        h.settle()
        pending = h.rt.store.scheduled_for("lead-1")
        assert [m.split("\x1f")[0] for m, _ in pending] == ["decline"]
        h.advance(timedelta(minutes=30))  # well before the 2 hour minimum
        h.emit(event("e3", "lead.requalified", email=None))
        h.settle()
        assert h.rt.store.scheduled_for("lead-1") == []
        h.emit(event("e4", "lead.created", **inbound()))
        h.settle()
        run_days(h, 2)
        assert refusals(h) == []
        assert steps_sent(h) == [("value-first", "outcome-story")]
        # Disqualified for good later: this lead never had its refusal, so it gets one.
        h.emit(event("e5", "lead.disqualified", email=None, data={"reason": "ethics"}))
        h.settle()
        run_days(h, 30)
    assert steps_sent(h) == [("value-first", "outcome-story"), ("decline", "refusal")]
    assert_refusal_package(refusals(h)[0], "ethics")


def test_refusal_guide_is_not_one_the_lead_already_got(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **inbound()))
        h.settle()
        run_days(h, 30)
        assert len(steps_sent(h)) == 4
        h.emit(event("e2", "lead.disqualified", email=None, data={"reason": "budget"}))
        h.settle()
        run_days(h, 3)
    messages = [m for m in h.messages() if m["X-Nurture-Lead"] == "lead-1"]
    guide_step = next(m for m in messages if m["X-Nurture-Step"] == "how-to-guide")
    refusal = refusals(h)[0]
    guide_urls = {w for w in text_of(guide_step).split() if "/guides/" in w}
    refusal_urls = {w for w in text_of(refusal).split() if "/guides/" in w}
    assert guide_urls and refusal_urls
    assert not guide_urls & refusal_urls


def test_decline_touch_id_is_per_lead(make_harness: Callable[..., Harness]) -> None:
    """Two leads sharing nothing but the reason each get their own refusal."""
    h = make_harness()
    with running(h):
        h.emit(event("a", lead_id="lead-a", email="a@example.com", **inbound(budget=1)))
        h.emit(event("b", lead_id="lead-b", email="b@example.com", **inbound(budget=1)))
        h.settle()
        members = {m for lead in ("lead-a", "lead-b") for m, _ in h.rt.store.scheduled_for(lead)}
        assert members == {
            touch_id("decline", 1, "refusal", "lead-a"),
            touch_id("decline", 1, "refusal", "lead-b"),
        }
        run_days(h, 3)
    assert sorted(lid for lid, *_ in h.sent()) == ["lead-a", "lead-b"]


DECLINE_BUDGET = """\
id: decline-budget
description: A refusal written for leads who cannot pay
trigger:
  event: lead.disqualified
  when: {data.reason: budget}
send_window: {days: mon-fri, hours: "09:00-17:00"}
steps:
  - {id: refusal, wait: 2-20h, template: decline/refusal}
"""


@pytest.mark.parametrize(
    ("reason", "sequence"), [("budget", "decline-budget"), ("ethics", "decline")]
)
def test_a_decline_written_for_the_reason_goes_before_the_catch_all_and_only_one(
    make_harness: Callable[..., Harness],
    catalog_dirs: dict[str, Path],
    reason: str,
    sequence: str,
) -> None:
    (catalog_dirs["sequences"] / "decline-budget.yaml").write_text(DECLINE_BUDGET)
    h = make_harness()
    with running(h):
        h.emit(event("e1", "lead.disqualified", data={"reason": reason}, **inbound()))
        h.settle()
        run_days(h, 7)
    assert steps_sent(h) == [(sequence, "refusal")]
    assert_refusal_package(h.messages()[0], reason)


def test_no_decline_sequence_fits_then_a_later_one_still_can(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    """With only a budget refusal written, an ethics disqualification sends nothing and
    does not use up the lead's one refusal."""
    (catalog_dirs["sequences"] / "decline.yaml").unlink()
    (catalog_dirs["sequences"] / "decline-budget.yaml").write_text(DECLINE_BUDGET)
    h = make_harness()
    with running(h):
        h.emit(event("e1", "lead.disqualified", data={"reason": "ethics"}, **inbound()))
        h.settle()
        run_days(h, 7)
        assert h.sent() == []
        h.emit(event("e2", "lead.disqualified", email=None, data={"reason": "budget"}))
        h.settle()
        run_days(h, 7)
    assert steps_sent(h) == [("decline-budget", "refusal")]
