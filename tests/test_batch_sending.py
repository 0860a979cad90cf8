"""The sender delivers a queue message's touches together (``send_many``) and records
each outcome on its own, with the ledger's exactly-once and outcome-unknown rules.

Real Redis, the real ``sendgrid`` library against the loopback stand-in answering after a
delay, as SendGrid does (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send:
``202`` accepted; ``429`` rate limited; other ``4xx`` refused).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from tests.harness import Harness, event
from tests.sendgrid_standin import SendGridStandIn
from tests.test_pipeline import INBOUND
from worker.runtime import Tuning
from worker.sending import Touch

INLINE_QUEUE = True
LEADS = 12


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as standin:
        yield standin


@pytest.fixture
def harness(make_harness: Callable[..., Harness], sendgrid: SendGridStandIn) -> Harness:
    return make_harness(
        delivery="sendgrid",
        sendgrid_host=sendgrid.url,
        sendgrid_api_key=sendgrid.api_key,
        tuning=Tuning(touches_per_message=LEADS),
    )


def _due_touches(harness: Harness) -> list[Touch]:
    """Enroll LEADS leads and claim their first touches, as the scheduler would."""
    for n in range(LEADS):
        harness.emit(event(f"e{n}", lead_id=f"lead-{n}", email=f"l{n}@example.com", **INBOUND))
    harness.settle()
    harness.clock.set(harness.clock.now() + timedelta(minutes=10))
    claimed = harness.rt.store.claim_due(harness.clock.now().timestamp(), LEADS, lease=300)
    assert len(claimed) == LEADS
    return [Touch(member, due) for member, due in claimed]


def test_a_batch_is_sent_concurrently_and_each_touch_recorded(
    harness: Harness, sendgrid: SendGridStandIn
) -> None:
    touches = _due_touches(harness)
    sendgrid.latency(1.0)
    started = time.monotonic()
    outcomes = harness.rt.sender.send_batch(touches)
    elapsed = time.monotonic() - started
    assert outcomes == {"sent": LEADS}
    # One after another would take LEADS x 1 s; together about one answer's time.
    assert elapsed < LEADS / 2, f"{elapsed:.1f} s: the sends did not overlap"
    leads = Counter(m.custom_args["lead_id"] for m in sendgrid.messages)
    assert leads == Counter(f"lead-{n}" for n in range(LEADS))
    for touch in touches:
        assert harness.rt.store.ledger_state(touch.member).startswith("sent:")
    # Delivered again (the queue redelivers the message): nothing goes out twice.
    # (the enrollment has moved on, so each is stale before the ledger is even asked).
    again = harness.rt.sender.send_batch(touches)
    assert again == {"stale": LEADS}
    assert len(sendgrid.messages) == LEADS
    assert harness.dead_letters() == []


def test_each_outcome_in_a_batch_is_handled_on_its_own(
    harness: Harness, sendgrid: SendGridStandIn
) -> None:
    touches = _due_touches(harness)
    sendgrid.latency(0.05)
    refused = {"status": 400, "errors": [{"message": "Invalid to address", "field": "to"}]}
    # Which message meets which answer depends on the order the requests arrive.
    sendgrid.script([429, refused, "lost"])
    outcomes = harness.rt.sender.send_batch(touches)
    assert outcomes == {"retry": 1, "failed": 1, "unknown": 1, "sent": LEADS - 3}
    states = Counter(harness.rt.store.ledger_state(t.member).split(":", 1)[0] for t in touches)
    # The 429 released its reservation (retried later); the refusal is dead; the lost
    # answer is recorded as unknown and never resent.
    assert states["sent"] == LEADS - 3 and states["unknown"] == 1
    assert [m for m, _ in harness.rt.store.unknown_outcomes()] != []
    reasons = sorted(letter["reason"].split(":", 1)[0] for letter in harness.dead_letters())
    assert reasons == ["outcome unknown, not resent", "refused by sendgrid"]
    assert len(sendgrid.messages) == LEADS - 2  # the 429 and the refusal were not accepted
    # The queue delivers the message again: only the touch refused with 429 (released,
    # still pending) goes out; everything else is settled.
    again = harness.rt.sender.send_batch(touches)
    assert again == {"stale": LEADS - 1, "sent": 1}
    leads = Counter(m.custom_args["lead_id"] for m in sendgrid.messages)
    assert len(leads) == LEADS - 1 and set(leads.values()) == {1}
