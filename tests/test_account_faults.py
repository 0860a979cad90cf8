"""Account faults pause delivery instead of failing messages (issue 12, item 1).

SendGrid's documented account-level answers (401 for a revoked key or exhausted
credits, 403 for a key without Mail Send or an unverified Sender Identity; see
https://support.sendgrid.com/hc/en-us/articles/18322114821403-4XX-API-Errors-and-Troubleshooting-Suggestions,
https://www.twilio.com/docs/api/errors/60604, https://twilio.com/docs/api/errors/60222 and
https://twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/errors)
are served by the loopback stand-in; the worker must pause, keep every touch in its
place, probe (``GET /v3/scopes``) and resume by itself.

A sender-identity fault (403 "The from address does not match a verified Sender
Identity", https://www.twilio.com/docs/api/errors/60222) is probed by asking SendGrid
whether that address is verified now: ``GET /v3/verified_senders``
(https://twilio.com/docs/sendgrid/api-reference/sender-verification/get-all-verified-senders)
and ``GET /v3/whitelabel/domains``
(https://twilio.com/docs/sendgrid/api-reference/domain-authentication/list-all-authenticated-domains),
which the stand-in answers in those documented shapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import Harness, event, running
from tests.http.helpers import LiveServer
from tests.sendgrid_standin import SendGridStandIn
from tests.test_pipeline import INBOUND
from worker.cli import _delivery_line
from worker.delivery.base import Message
from worker.delivery.sendgrid import SendGridDelivery, sender_of
from worker.errors import AccountFaultError, PermanentDeliveryError
from worker.http.app import create_app
from worker.status import collect_status

LEADS = 20


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    with SendGridStandIn() as standin:
        yield standin


def _message(key: str = "k1") -> Message:
    return Message(
        key=key,
        to_email="ann@example.com",
        to_name=None,
        from_email="hello@nurture.example",
        from_name=None,
        subject="Hi",
        text="Hello",
        html=None,
        unsubscribe_url="https://nurture.example/unsubscribe/t",
        lead_id="lead-1",
        sequence="value-first",
        step="outcome-story",
    )


@pytest.mark.parametrize("kind", ["revoked", "credits", "not_authorized", "forbidden", "sender"])
def test_account_answers_are_account_faults(sendgrid: SendGridStandIn, kind: str) -> None:
    """Each documented account answer, through the real ``sendgrid`` library."""
    delivery = SendGridDelivery(sendgrid.api_key, sendgrid.url, timeout=5)
    try:
        sendgrid.account_fault(kind, seconds=30)
        with pytest.raises(AccountFaultError):
            delivery.send(_message())
        sendgrid.account_fault(None)
        assert delivery.send(_message()).provider_id
    finally:
        delivery.close()


def test_one_bad_address_stays_a_refusal_of_that_message(sendgrid: SendGridStandIn) -> None:
    delivery = SendGridDelivery(sendgrid.api_key, sendgrid.url, timeout=5)
    try:
        sendgrid.script([{"status": 400, "errors": [{"message": "Invalid to", "field": "to"}]}])
        with pytest.raises(PermanentDeliveryError) as caught:
            delivery.send(_message())
        assert not isinstance(caught.value, AccountFaultError)
    finally:
        delivery.close()


def test_probe_checks_the_key_with_get_scopes(sendgrid: SendGridStandIn) -> None:
    delivery = SendGridDelivery(sendgrid.api_key, sendgrid.url, timeout=5)
    wrong = SendGridDelivery("SG.wrong", sendgrid.url, timeout=5)
    try:
        assert delivery.probe() is None
        assert "401" in (wrong.probe() or "")
        sendgrid.account_fault("revoked", seconds=30)
        assert "revoked" in (delivery.probe() or "")
        sent_before = sendgrid.accepted
        sendgrid.account_fault(None)
        assert delivery.probe() is None
        assert sendgrid.accepted == sent_before  # probing never sends mail
    finally:
        delivery.close()
        wrong.close()


def test_sender_fault_names_the_address_and_the_probe_asks_sendgrid() -> None:
    """The 403 names the from address; the probe stays paused until SendGrid lists it
    as verified (or its domain as authenticated), and never sends mail to find out."""
    with SendGridStandIn(verified_senders=[f"other{n}@x.example" for n in range(250)]) as sg:
        delivery = SendGridDelivery(sg.api_key, sg.url, timeout=5)
        try:
            with pytest.raises(AccountFaultError) as caught:
                delivery.send(_message())
            reason = str(caught.value)
            assert "Sender Identity" in reason
            assert sender_of(reason) == "hello@nurture.example"
            refused, lookups = sg.sender_refusals, sg.sender_lookups
            problem = delivery.probe(reason)
            assert problem is not None and "hello@nurture.example" in problem
            assert "not a verified Sender Identity" in problem
            assert sg.sender_lookups > lookups  # it asked SendGrid (3 pages of senders)
            assert sg.sender_refusals == refused and sg.accepted == 0  # without sending
            sg.verify_sender("Hello@Nurture.example")
            assert delivery.probe(reason) is None
            assert delivery.send(_message()).provider_id
            # A revoked key is still what the probe finds first.
            sg.account_fault("revoked", seconds=30)
            assert "revoked" in (delivery.probe(reason) or "")
        finally:
            delivery.close()
    with SendGridStandIn(verified_senders=[], authenticated_domains=["nurture.example"]) as sg:
        delivery = SendGridDelivery(sg.api_key, sg.url, timeout=5)
        try:
            assert (
                delivery.probe(
                    "SendGrid 403: … verified Sender Identity … [from a@nurture.example]"
                )
                is None
            )
            problem = delivery.probe(
                "SendGrid 403: … verified Sender Identity … [from a@else.example]"
            )
            assert problem is not None and "a@else.example" in problem
        finally:
            delivery.close()


def test_unverified_sender_stays_paused_until_verified_then_each_touch_once(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    """A campaign from a sender not yet verified: delivery pauses at the first refusal
    and stays paused, probing SendGrid's lists every interval without a send (no
    resume-and-pause again); once the sender is verified, every touch goes out once."""
    with SendGridStandIn(verified_senders=[]) as sg:
        harness = make_harness(
            delivery="sendgrid",
            sendgrid_host=sg.url,
            sendgrid_api_key=sg.api_key,
            pause_probe_interval=1.0,
        )
        leads = 8
        with running(harness):
            for i in range(1, leads + 1):
                harness.emit(event(f"e{i}", lead_id=f"lead-{i}", email=f"l{i}@ex.com", **INBOUND))
            harness.clock.advance(timedelta(minutes=10))
            deadline = time.monotonic() + 30
            while not harness.rt.store.pauses.delivery() and time.monotonic() < deadline:
                harness.scheduler.tick()
                time.sleep(0.2)
            time.sleep(1)  # the touches in flight come back from their refusals
            status = collect_status(harness.rt)["delivery"]
            assert status["paused"], status
            sender = sender_of(status["reason"])
            assert sender is not None and sender in status["reason"]
            refused, lookups = sg.sender_refusals, sg.sender_lookups
            # Five probe intervals: still paused, no mail send tried again.
            until = time.monotonic() + 5.5
            while time.monotonic() < until:
                harness.scheduler.tick()
                time.sleep(0.25)
            assert collect_status(harness.rt)["delivery"]["paused"]
            assert sg.sender_refusals == refused
            assert sg.sender_lookups >= lookups + 3  # it kept probing SendGrid's lists
            assert sg.accepted == 0
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any("not a verified Sender Identity" in m for m in warnings)
            sg.verify_sender(sender)
            deadline = time.monotonic() + 30
            while sg.accepted < leads and time.monotonic() < deadline:
                harness.scheduler.tick()
                time.sleep(0.25)
            harness.settle()
        keys = _sent_keys(sg)
        assert len(keys) == leads == len(set(keys))  # each touch exactly once
        assert sg.sender_refusals == refused  # never refused again after the pause
        assert collect_status(harness.rt)["delivery"] == {"paused": False}
        assert harness.dead_letters() == []


def _sent_keys(standin: SendGridStandIn) -> list[tuple[str, str, str]]:
    return [
        (m.custom_args["lead_id"], m.custom_args["sequence"], m.custom_args["step"])
        for m in standin.messages
    ]


def test_revoked_key_mid_campaign_pauses_then_every_touch_goes_out_once(
    make_harness: Callable[..., Harness],
    sendgrid: SendGridStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The issue's "done when": the key is revoked for ~25 s in the middle of a campaign
    of 20 touches; no command is typed; all 20 go out exactly once and status, /readyz
    and /metrics said why delivery waited."""
    harness = make_harness(
        delivery="sendgrid",
        sendgrid_host=sendgrid.url,
        sendgrid_api_key=sendgrid.api_key,
        pause_probe_interval=2.0,
    )
    server = LiveServer(create_app(harness.rt))
    half = LEADS // 2
    try:
        with running(harness):
            for i in range(1, half + 1):
                harness.emit(event(f"e{i}", lead_id=f"lead-{i}", email=f"l{i}@ex.com", **INBOUND))
            harness.advance(timedelta(minutes=10))
            assert len(sendgrid.messages) == half
            sendgrid.account_fault("revoked", seconds=25)
            revoked_at = time.monotonic()
            for i in range(half + 1, LEADS + 1):
                harness.emit(event(f"e{i}", lead_id=f"lead-{i}", email=f"l{i}@ex.com", **INBOUND))
            harness.clock.advance(timedelta(minutes=10))
            said: list[str] = []
            ready: list[dict[str, str]] = []
            metric_seen = False
            # The worker's scheduler runs on its own: tick until every touch is sent.
            deadline = time.monotonic() + 90
            while len(sendgrid.messages) < LEADS and time.monotonic() < deadline:
                harness.scheduler.tick()
                status = collect_status(harness.rt)
                if status["delivery"]["paused"]:
                    said.append(_delivery_line(status["delivery"], time.time()))
                    ready.append(server.client.get("/readyz").json())
                    metrics = server.client.get("/metrics").text
                    metric_seen = metric_seen or "nurture_delivery_paused 1.0" in metrics
                time.sleep(0.5)
            waited = time.monotonic() - revoked_at
            harness.settle()
        keys = _sent_keys(sendgrid)
        assert len(keys) == LEADS
        assert len(set(keys)) == LEADS  # exactly once each
        assert {k[0] for k in keys} == {f"lead-{i}" for i in range(1, LEADS + 1)}
        assert waited >= 24  # nothing went out while the key was revoked
        assert sendgrid.fault_refusals >= 1
        # Status, /readyz and /metrics said why and since when.
        assert said, "status never showed the pause"
        assert "PAUSED since" in said[0] and "revoked" in said[0]
        assert ready[0]["status"] == "degraded"
        assert "revoked" in ready[0]["message"]
        assert metric_seen
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(m.startswith("delivery paused for all workers: SendGrid 401") for m in errors)
        # One line a minute while paused (the outage is shorter than a minute: one).
        assert sum(m.startswith("delivery paused since") for m in errors) == 1
        # Now running again, nothing failed, nothing dead-lettered.
        assert collect_status(harness.rt)["delivery"] == {"paused": False}
        assert server.client.get("/readyz").json() == {"status": "ready"}
        assert harness.dead_letters() == []
        stats = harness.rt.store.stats()["value-first"]["outcome-story"]
        assert stats["sent"] == LEADS
        assert "failed" not in stats and "retried" not in stats
        for i in range(1, LEADS + 1):
            enrollment = harness.rt.store.enrollment(f"lead-{i}", "value-first")
            assert enrollment is not None and enrollment.step == "case-study"
    finally:
        server.stop()


def test_status_line_names_reason_and_since() -> None:
    since = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()
    line = _delivery_line(
        {"paused": True, "reason": "SendGrid 401: revoked", "since": since}, since + 150
    )
    assert line.startswith("delivery: PAUSED since 2026-11-29 10:00:00 UTC (2 min)")
    assert "SendGrid 401: revoked" in line
    assert _delivery_line({"paused": False}, since) == "delivery: running"
