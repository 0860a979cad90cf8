"""The pipeline through the real ``sendgrid`` library against the loopback stand-in:
retries, permanent failures and unknown outcomes, each ending with one email or a record."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from tests.harness import Harness, event, running
from tests.sendgrid_standin import SendGridStandIn
from tests.test_pipeline import INBOUND
from worker.store import Verdict


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as standin:
        yield standin


@pytest.fixture
def harness(make_harness: Callable[..., Harness], sendgrid: SendGridStandIn) -> Harness:
    return make_harness(
        delivery="sendgrid", sendgrid_host=sendgrid.url, sendgrid_api_key=sendgrid.api_key
    )


def keys(standin: SendGridStandIn) -> list[tuple[str, str, str]]:
    return [
        (m.custom_args["lead_id"], m.custom_args["sequence"], m.custom_args["step"])
        for m in standin.messages
    ]


def test_429_then_202_sends_once(harness: Harness, sendgrid: SendGridStandIn) -> None:
    sendgrid.script([429, 202])
    with running(harness):
        harness.emit(event("e1", **INBOUND))
        harness.advance(timedelta(minutes=10))
        assert keys(sendgrid) == []  # refused with 429: rescheduled, not lost
        assert harness.rt.store.stats()["value-first"]["outcome-story"]["retried"] == 1
        harness.advance(timedelta(seconds=5))
        harness.advance(timedelta(seconds=5))
    assert keys(sendgrid) == [("lead-1", "value-first", "outcome-story")]
    message = sendgrid.messages[0]
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.headers["List-Unsubscribe"].startswith("<https://nurture.example/unsub")
    assert "Vesterbrogade 1" in (message.text or "")
    assert harness.dead_letters() == []


def test_permanent_refusal_is_dead_lettered_and_the_sequence_goes_on(
    harness: Harness, sendgrid: SendGridStandIn
) -> None:
    sendgrid.script([{"status": 400, "errors": [{"message": "Invalid to address", "field": "to"}]}])
    with running(harness):
        harness.emit(event("e1", **INBOUND))
        harness.advance(timedelta(minutes=10))
        harness.run_until(harness.clock.now().timestamp() + 30 * 86400)
    assert [k[2] for k in keys(sendgrid)] == ["case-study", "testimonial", "how-to-guide"]
    letters = harness.dead_letters()
    assert len(letters) == 1
    assert "Invalid to address" in letters[0]["reason"]
    assert harness.rt.store.stats()["value-first"]["outcome-story"]["failed"] == 1


def test_lost_reply_is_recorded_as_unknown_and_never_resent(
    harness: Harness, sendgrid: SendGridStandIn
) -> None:
    sendgrid.script(["lost"])  # SendGrid got it, the answer never came back
    with running(harness):
        harness.emit(event("e1", **INBOUND))
        harness.advance(timedelta(minutes=10))
        harness.run_until(harness.clock.now().timestamp() + 30 * 86400)
    sent = keys(sendgrid)
    assert sent.count(("lead-1", "value-first", "outcome-story")) == 1
    assert len(sent) == 4
    unknown = harness.rt.store.unknown_outcomes()
    assert [member.split("\x1f")[2] for member, _ in unknown] == ["outcome-story"]


def test_crash_mid_send_is_not_resent(harness: Harness, sendgrid: SendGridStandIn) -> None:
    """A worker died after reserving the send: the retry finds the reservation,
    waits out NURTURE_SEND_TIMEOUT, then records the outcome as unknown."""
    with running(harness):
        harness.emit(event("e1", **INBOUND))
        harness.settle()
        [(member, _due)] = harness.rt.store.scheduled_for("lead-1")
        harness.clock.set(harness.clock.now() + timedelta(minutes=10))
        # Simulate the crash: claim + reserve, then nothing.
        harness.rt.store.claim_due(harness.clock.now().timestamp(), 10, lease=60)
        reservation = harness.rt.store.reserve_send(
            member, "ann@example.com", harness.clock.now().timestamp(), 0, False, 120
        )
        assert reservation.verdict is Verdict.OK
        harness.advance(timedelta(seconds=61))  # lease over: offered again, reservation fresh
        assert keys(sendgrid) == []
        harness.advance(timedelta(seconds=300))  # lease over again, reservation now stale
    assert keys(sendgrid) == []
    assert [m for m, _ in harness.rt.store.unknown_outcomes()] == [member]
    assert harness.rt.store.ledger_state(member).startswith("unknown:")
    # The sequence moved on to its next step.
    enrollment = harness.rt.store.enrollment("lead-1", "value-first")
    assert enrollment is not None and enrollment.step == "case-study"
