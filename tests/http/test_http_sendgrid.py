"""POST /webhooks/sendgrid: verification, suppression, counting, idempotency."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.harness import Harness
from tests.http.helpers import LiveServer, SendgridSigner, queued_events
from worker.errors import SettingsError
from worker.http.app import create_app
from worker.runtime import Runtime


@pytest.fixture
def sg_harness(make_harness: Callable[..., Harness], sendgrid_signer: SendgridSigner) -> Harness:
    harness = make_harness(sendgrid_webhook_public_key=sendgrid_signer.public_key)
    store = harness.rt.store
    store.save_lead("lead-1", {"id": "lead-1", "email": "Ann@Example.com"}, None)
    store.save_lead("lead-2", {"id": "lead-2", "email": "bob@example.com"}, None)
    return harness


@pytest.fixture
def sg_live(serve: Callable[[Runtime], LiveServer], sg_harness: Harness) -> LiveServer:
    return serve(sg_harness.rt)


def _sg(
    event: str, sg_id: str, email: str | None = "ann@example.com", **extra: Any
) -> dict[str, Any]:
    return {
        "email": email,
        "timestamp": 1_700_000_000,
        "event": event,
        "sg_event_id": sg_id,
        "sg_message_id": "msg.1",
        "lead_id": "lead-1",
        "sequence": "value-first",
        "step": "outcome-story",
        **extra,
    }


def _post(live: LiveServer, signer: SendgridSigner, events: Any) -> httpx.Response:
    body = json.dumps(events).encode()
    return live.client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))


def test_unset_key_refuses_everything_clearly(
    live: LiveServer, sendgrid_signer: SendgridSigner
) -> None:
    response = _post(live, sendgrid_signer, [_sg("delivered", "x")])
    assert response.status_code == 401
    assert response.json()["error"] == "sendgrid_webhook_disabled"
    assert "NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["message"]


def test_invalid_key_stops_start_up(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(sendgrid_webhook_public_key="bm90IGEga2V5")
    with pytest.raises(SettingsError, match="NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY"):
        create_app(harness.rt)


def test_bad_or_missing_signature_changes_nothing(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    body = json.dumps([_sg("bounce", "b1", type="bounce")]).encode()
    headers = sendgrid_signer.headers(body)
    response = sg_live.client.post("/webhooks/sendgrid", content=body + b" ", headers=headers)
    assert response.status_code == 401
    response = sg_live.client.post(
        "/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    other = SendgridSigner()
    response = sg_live.client.post("/webhooks/sendgrid", content=body, headers=other.headers(body))
    assert response.status_code == 401
    assert sg_harness.rt.store.email_suppressed("ann@example.com") is None


@pytest.mark.parametrize(
    ("event", "extra"),
    [
        ("bounce", {"type": "bounce", "reason": "550 5.1.1 no such user"}),
        ("dropped", {"reason": "Bounced Address"}),
        ("spamreport", {}),
        ("unsubscribe", {}),
        ("group_unsubscribe", {"asm_group_id": 1}),
    ],
)
def test_suppressing_events(
    sg_live: LiveServer,
    sg_harness: Harness,
    sendgrid_signer: SendgridSigner,
    event: str,
    extra: dict[str, Any],
) -> None:
    response = _post(sg_live, sendgrid_signer, [_sg(event, f"{event}-1", **extra)])
    assert response.status_code == 200, response.text
    assert response.json() == {"processed": 1, "duplicates": 0, "ignored": 0, "invalid": 0}
    store = sg_harness.rt.store
    assert store.email_suppressed("ann@example.com") == event
    lead = store.get_lead("lead-1")
    assert lead is not None and lead.suppressed == event
    other = store.get_lead("lead-2")
    assert other is not None and other.suppressed is None
    # The lead's enrollments are ended through the normal event path.
    assert queued_events(sg_harness.rt) == 1


def test_blocked_bounce_is_soft_and_ignored(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    response = _post(sg_live, sendgrid_signer, [_sg("bounce", "soft-1", type="blocked")])
    assert response.json() == {"processed": 0, "duplicates": 0, "ignored": 1, "invalid": 0}
    assert sg_harness.rt.store.email_suppressed("ann@example.com") is None
    assert queued_events(sg_harness.rt) == 0


def test_engagement_is_counted_per_step_once(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    batch = [
        _sg("processed", "p1"),
        _sg("delivered", "d1"),
        _sg("open", "o1"),
        _sg("open", "o2"),
        _sg("click", "c1", step="case-study", url="https://example.com"),
        _sg("delivered", "foreign", sequence=None, step=None),
    ]
    response = _post(sg_live, sendgrid_signer, batch)
    assert response.json() == {"processed": 4, "duplicates": 0, "ignored": 2, "invalid": 0}
    # SendGrid retries the same batch: nothing is counted twice.
    response = _post(sg_live, sendgrid_signer, batch)
    assert response.json() == {"processed": 0, "duplicates": 5, "ignored": 1, "invalid": 0}
    stats = sg_harness.rt.store.stats()["value-first"]
    assert stats["outcome-story"] == {"delivered": 1, "open": 2}
    assert stats["case-study"] == {"click": 1}


def test_replayed_bounce_is_a_duplicate(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    batch = [_sg("bounce", "b-1", type="bounce")]
    assert _post(sg_live, sendgrid_signer, batch).json()["processed"] == 1
    assert _post(sg_live, sendgrid_signer, batch).json()["duplicates"] == 1


def test_unreadable_events_are_kept_as_dead_letters(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    batch: list[Any] = [
        "not an object",
        {"event": "delivered"},
        _sg("bounce", "b-x", email=None, type="bounce"),
        _sg("delivered", "ok"),
    ]
    response = _post(sg_live, sendgrid_signer, batch)
    assert response.status_code == 200
    assert response.json() == {"processed": 1, "duplicates": 0, "ignored": 0, "invalid": 3}
    letters = sg_harness.dead_letters()
    assert len(letters) == 3
    assert {letter["kind"] for letter in letters} == {"sendgrid"}


def test_bad_bodies(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    for body, status in [
        (b"{}", 400),
        (b"not json", 400),
        (b"[" * 100 + b"]" * 100, 400),
    ]:
        response = sg_live.client.post(
            "/webhooks/sendgrid", content=body, headers=sendgrid_signer.headers(body)
        )
        assert response.status_code == status, body
        assert response.json()["error"]


def test_redis_down_gives_503_so_sendgrid_retries(
    make_harness: Callable[..., Harness],
    serve: Callable[[Runtime], LiveServer],
    sendgrid_signer: SendgridSigner,
) -> None:
    harness = make_harness(
        redis_url="redis://127.0.0.1:9/0", sendgrid_webhook_public_key=sendgrid_signer.public_key
    )
    live = serve(harness.rt)
    response = _post(live, sendgrid_signer, [_sg("bounce", "b-down", type="bounce")])
    assert response.status_code == 503


# group_resubscribe as in the Event Webhook Reference's example of each event
# (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event): an
# engagement event with useragent, ip, url and the unsubscribe group's asm_group_id.
RESUBSCRIBE_EXTRA = {
    "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322)",
    "ip": "255.255.255.255",
    "url": "http://www.sendgrid.com/",
    "asm_group_id": 1,
    "category": "cat facts",
}


def test_group_resubscribe_lifts_sendgrids_group_unsubscribe(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner
) -> None:
    _post(sg_live, sendgrid_signer, [_sg("group_unsubscribe", "gu-1", asm_group_id=1)])
    store = sg_harness.rt.store
    assert store.email_suppressed("ann@example.com") == "group_unsubscribe"
    response = _post(
        sg_live, sendgrid_signer, [_sg("group_resubscribe", "gr-1", **RESUBSCRIBE_EXTRA)]
    )
    assert response.json() == {"processed": 1, "duplicates": 0, "ignored": 0, "invalid": 0}
    assert store.email_suppressed("ann@example.com") is None
    lead = store.get_lead("lead-1")
    assert lead is not None and lead.suppressed is None
    again = _post(sg_live, sendgrid_signer, [_sg("group_resubscribe", "gr-1", **RESUBSCRIBE_EXTRA)])
    assert again.json()["duplicates"] == 1


@pytest.mark.parametrize("ours", ["unsubscribe", "spamreport", "bounce"])
def test_group_resubscribe_never_lifts_other_suppressions(
    sg_live: LiveServer, sg_harness: Harness, sendgrid_signer: SendgridSigner, ours: str
) -> None:
    """A one-click unsubscribe made here (reason ``unsubscribe``, like SendGrid's global
    unsubscribe), a complaint or a bounce stays: a group resubscribe concerns only
    SendGrid's unsubscribe group."""
    from worker.suppression import suppress_address, unsubscribe_lead

    if ours == "unsubscribe":
        assert unsubscribe_lead(sg_harness.rt, "lead-1")
    else:
        suppress_address(sg_harness.rt, "ann@example.com", ours)
    _post(sg_live, sendgrid_signer, [_sg("group_resubscribe", "gr-2", **RESUBSCRIBE_EXTRA)])
    store = sg_harness.rt.store
    assert store.email_suppressed("ann@example.com") == ours
    lead = store.get_lead("lead-1")
    assert lead is not None and lead.suppressed == ours
