"""End to end on a real Redis with real dramatiq workers: events in, emails out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.harness import Harness, event, running

#: Messages run inline on dramatiq's StubBroker (see tests/harness.py): no worker threads.
INLINE_QUEUE = True

INBOUND = {
    "first_name": "Ann",
    "company": "Berg ApS",
    "source": "website",
    "timezone": "Europe/Copenhagen",
    "attributes": {"industry": "saas", "problem": "churn", "budget": 5000},
}

VALUE_FIRST = ["outcome-story", "case-study", "testimonial", "how-to-guide"]


def steps_sent(h: Harness, lead: str = "lead-1") -> list[str]:
    return [step for (lid, _seq, step) in h.sent() if lid == lead]


def test_created_event_sends_every_step_in_order_at_its_time(
    make_harness: Callable[..., Harness],
) -> None:

    h = make_harness()
    with running(h):
        assert h.emit(event("e1", **INBOUND)).accepted == 1
        h.settle()
        assert steps_sent(h) == []  # the first step waits 10 minutes
        scheduled = h.rt.store.scheduled_for("lead-1")
        assert len(scheduled) == 1
        assert scheduled[0][1] == pytest.approx(h.clock.now().timestamp() + 600)
        h.advance(timedelta(minutes=10))
        assert steps_sent(h) == ["outcome-story"]
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert steps_sent(h) == VALUE_FIRST
    messages = h.messages()
    # Every touch went out inside the send window (mon-fri 09-17 Copenhagen).
    for message in messages:
        assert message["List-Unsubscribe"].startswith("<https://nurture.example/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    enrollment = h.rt.store.enrollment("lead-1", "value-first")
    assert enrollment is not None and enrollment.state == "done"
    assert h.rt.store.stats()["value-first"]["outcome-story"]["sent"] == 1


def test_reply_cancels_what_is_pending(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **INBOUND))
        h.advance(timedelta(minutes=10))
        assert steps_sent(h) == ["outcome-story"]
        h.emit(event("e2", "lead.replied", email=None))
        h.settle()
        assert h.rt.store.scheduled_for("lead-1") == []
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert steps_sent(h) == ["outcome-story"]
    enrollment = h.rt.store.enrollment("lead-1", "value-first")
    assert enrollment is not None
    assert (enrollment.state, enrollment.reason) == ("exited", "exit_on:lead.replied")


def test_replayed_event_sends_nothing_new(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        first = h.emit(event("e1", **INBOUND))
        again = h.emit(event("e1", **INBOUND), event("e1", **INBOUND))
        assert (first.accepted, first.duplicates) == (1, 0)
        assert (again.accepted, again.duplicates) == (0, 2)
        h.advance(timedelta(minutes=10))
        # The same event delivered twice by the queue (at-least-once) changes nothing.
        h.rt.actors.process_events.send([event("e1", **INBOUND).to_json()])
        h.settle()
        h.advance(timedelta(minutes=10))
    assert steps_sent(h) == ["outcome-story"]


def test_lead_is_in_a_sequence_at_most_once(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **INBOUND))
        h.emit(event("e2", **INBOUND))  # another lead.created for the same lead
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert steps_sent(h) == VALUE_FIRST


def test_lead_without_email_is_kept_and_others_go_on(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        # A lead seen for the first time without an email is kept, not contactable yet.
        h.emit(event("bare", lead_id="nobody", email=None), event("good", **INBOUND))
        h.advance(timedelta(minutes=10))
    assert steps_sent(h) == ["outcome-story"]
    assert h.dead_letters() == []
    nobody = h.rt.store.get_lead("nobody")
    assert nobody is not None and nobody.email is None
    assert h.rt.store.enrollments("nobody") == {}


def test_unsubscribe_event_stops_everything(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", **INBOUND))
        h.emit(event("e2", "lead.unsubscribed", email=None))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
        # Even a new trigger does not enroll an unsubscribed lead.
        h.emit(event("e3", "lead.created", **INBOUND))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert h.sent() == []


def test_removed_exit_before_trigger_is_not_chased(make_harness: Callable[..., Harness]) -> None:
    """Events processed out of order: a reply that happened after the trigger but is
    processed first still keeps the lead out of the sequence."""
    h = make_harness()
    with running(h):
        h.emit(event("r", "lead.replied", occurred_at="2026-11-23T09:05:00Z", **INBOUND))
        h.settle()
        h.emit(event("c", "lead.created", occurred_at="2026-11-23T09:00:00Z", **INBOUND))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert h.sent() == []


@pytest.mark.parametrize(
    "ending", ["lead.unsubscribed", "lead.disqualified", "lead.replied", "meeting.booked"]
)
def test_ending_event_before_the_lead_is_known_is_kept(
    make_harness: Callable[..., Harness], ending: str
) -> None:
    """CRM webhooks arrive in any order: an ending event (without the address) processed
    before the lead's first event is kept, and the later event respects it."""
    h = make_harness()
    with running(h):
        h.emit(event("end", ending, email=None, occurred_at="2026-11-23T09:05:00Z"))
        h.settle()
        lead = h.rt.store.get_lead("lead-1")
        assert lead is not None and lead.email is None
        h.emit(event("c", "lead.created", occurred_at="2026-11-23T09:00:00Z", **INBOUND))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    # No nurture; a disqualified lead gets its one refusal once the address is known.
    expected = [("lead-1", "decline", "refusal")] if ending == "lead.disqualified" else []
    assert h.sent() == expected
    assert h.rt.store.dead_letter_count() == 0


def test_first_event_without_email_is_kept(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("c", "lead.created", email=None))
        h.settle()
    assert h.rt.store.dead_letters() == []
    lead = h.rt.store.get_lead("lead-1")
    assert lead is not None and lead.email is None


def test_disqualified_before_the_address_is_known_is_declined_when_it_arrives(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("d", "lead.disqualified", email=None, data={"reason": "budget"}))
        h.settle()
        h.emit(event("c", "lead.created", **INBOUND))
        h.emit(event("u", "lead.updated", company="Berg ApS"))  # the address again: no second
        h.settle()
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
    assert [step for _, sequence, step in h.sent() if sequence != "decline"] == []
    assert [(lead, sequence) for lead, sequence, _ in h.sent()] == [("lead-1", "decline")]
