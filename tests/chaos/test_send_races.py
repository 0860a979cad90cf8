"""Races around a send that fails transiently (429/5xx): the queue is at-least-once and
events keep arriving while a request is in flight, so the retry bookkeeping must not
overwrite what happened meanwhile (the lead left the sequence; a duplicate delivery of
the same touch already sent it and moved on)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest

from tests.chaos.procs import SEQUENCE, STEPS, chaos_event, report, touch_key
from tests.harness import Harness, running
from tests.sendgrid_standin import Reply, SendGridStandIn
from worker.sending import Touch


def _enroll(h: Harness, lead: str) -> tuple[str, float]:
    """Process the trigger event and claim the first touch, as the scheduler would."""
    h.rt.actors.process_events.fn([json.dumps(chaos_event(lead))])
    claimed = h.rt.store.claim_due(h.clock.now().timestamp(), 10, h.rt.settings.claim_lease)
    assert len(claimed) == 1, claimed
    return claimed[0]


def _steps_received(standin: SendGridStandIn, lead: str) -> list[str]:
    return [
        step
        for (lid, seq, step) in (touch_key(m) for m in standin.messages)
        if lid == lead and seq == SEQUENCE
    ]


@pytest.mark.chaos
def test_lead_that_replies_while_a_send_is_retried_gets_nothing_more(
    sendgrid_harness: Harness, standin: SendGridStandIn
) -> None:
    """The lead replies while the first touch's request is in flight; SendGrid answers
    429. The reply ended the enrollment: the retry must not bring it back."""
    h = sendgrid_harness
    member, due = _enroll(h, "replier")
    standin.script([Reply(status=429, delay=1.0)])  # slow 429: the reply comes meanwhile
    sending = threading.Thread(target=h.rt.actors.send_touches.fn, args=([[member, due]],))
    sending.start()
    standin_wait_for_request(standin)
    reply = {**chaos_event("replier"), "id": "evt-reply", "type": "lead.replied"}
    h.rt.actors.process_events.fn([json.dumps(reply)])
    exited = h.rt.store.enrollment("replier", SEQUENCE)
    sending.join(10)
    after_retry = h.rt.store.enrollment("replier", SEQUENCE)
    with running(h):
        h.run_until(h.clock.now().timestamp() + 3600)
    final = h.rt.store.enrollment("replier", SEQUENCE)
    received = _steps_received(standin, "replier")
    report(
        "reply-during-429",
        received_after_reply=received,
        state_after_reply=exited.state if exited else None,
        state_after_retry=after_retry.state if after_retry else None,
        final_state=final.state if final else None,
    )
    assert exited is not None and exited.state == "exited"
    assert received == [], f"emails sent after the lead replied: {received}"
    assert final is not None and (final.state, final.reason) == (
        "exited",
        "exit_on:lead.replied",
    ), final


@pytest.mark.chaos
def test_duplicate_delivery_during_a_retry_does_not_rewind_the_enrollment(
    sendgrid_harness: Harness, standin: SendGridStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Touch messages can be delivered twice (a claim lease ran out while the message
    waited in the queue, a worker died). Here the duplicate runs just after the first
    delivery got a 429 and released its reservation: it sends the touch and moves the
    enrollment to the second step. The first delivery's retry bookkeeping must not then
    put the enrollment back on the first step (which loses the second touch)."""
    h = sendgrid_harness
    member, due = _enroll(h, "dup-lead")
    standin.script([429])
    store = h.rt.store
    original = store.ledger.release
    duplicate_ran: list[str] = []

    def release_then_duplicate(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        if not duplicate_ran:  # the other worker thread, at exactly this moment
            duplicate_ran.append(h.rt.sender.send(Touch(member, due)))

    monkeypatch.setattr(store.ledger, "release", release_then_duplicate)
    h.rt.actors.send_touches.fn([[member, due]])
    monkeypatch.setattr(store.ledger, "release", original)
    rewound = store.enrollment("dup-lead", SEQUENCE)
    with running(h):
        h.run_until(h.clock.now().timestamp() + 3600)
        h.advance(timedelta(seconds=2))
    final = store.enrollment("dup-lead", SEQUENCE)
    received = _steps_received(standin, "dup-lead")
    report(
        "duplicate-during-retry",
        duplicate_outcome=duplicate_ran,
        step_after_retry_bookkeeping=rewound.step if rewound else None,
        received=received,
        final_state=final.state if final else None,
        final_step=final.step if final else None,
    )
    assert duplicate_ran == ["sent"]
    assert received == list(STEPS), f"received {received}; enrollment {final}"
    assert final is not None and final.state == "done", final


def standin_wait_for_request(standin: SendGridStandIn, timeout: float = 5.0) -> None:
    """Block until the stand-in has the request (it is then sleeping on the reply)."""
    import time

    deadline = time.monotonic() + timeout
    while standin.requests < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("no request reached the stand-in")
        time.sleep(0.01)
