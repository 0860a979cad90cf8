"""End to end through the real HTTP service, Redis and dramatiq workers: a signed CRM
webhook in, an email in the outbox, then SendGrid feedback or the one-click link, and
no further touch."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from tests.harness import Harness, running
from tests.http.helpers import LiveServer, SendgridSigner, signed_headers
from worker.runtime import Runtime

LEAD = {
    "id": "crm-1042",
    "email": "ann@example.com",
    "first_name": "Ann",
    "company": "Berg ApS",
    "source": "website",
    "timezone": "Europe/Copenhagen",
    "locale": "da",
    "attributes": {"industry": "saas", "problem": "churn", "budget": 5000},
}


def _steps(h: Harness) -> list[str]:
    return [step for (_lead, _seq, step) in h.sent()]


def test_signed_webhook_to_outbox_then_bounce_stops_everything(
    make_harness: Callable[..., Harness],
    serve: Callable[[Runtime], LiveServer],
    sendgrid_signer: SendgridSigner,
    crm_dir: Path,
) -> None:
    h = make_harness(sendgrid_webhook_public_key=sendgrid_signer.public_key, crm_dir=crm_dir)
    live = serve(h.rt)
    with running(h):
        body = json.dumps({"id": "evt-1", "type": "lead.created", "lead": LEAD}).encode()
        response = live.client.post("/events", content=body, headers=signed_headers(h.rt, body))
        assert response.status_code == 202
        assert response.json() == {"accepted": 1, "duplicates": 0}
        h.settle()
        h.advance(timedelta(minutes=10))
        assert h.sent() == [("crm-1042", "value-first", "outcome-story")]
        assert h.rt.store.scheduled_for("crm-1042")  # more touches are planned

        message = h.messages()[0]
        bounce = [
            {
                "email": message["To"].addresses[0].addr_spec,
                "timestamp": int(h.clock.now().timestamp()),
                "event": "bounce",
                "type": "bounce",
                "reason": "550 5.1.1 The email account does not exist",
                "sg_event_id": "sg-bounce-1",
                "sg_message_id": "m1",
                "lead_id": message["X-Nurture-Lead"],
                "sequence": message["X-Nurture-Sequence"],
                "step": message["X-Nurture-Step"],
            },
            {
                "email": "ann@example.com",
                "event": "delivered",
                "sg_event_id": "sg-delivered-1",
                "lead_id": "crm-1042",
                "sequence": "value-first",
                "step": "outcome-story",
            },
        ]
        raw = json.dumps(bounce).encode()
        response = live.client.post(
            "/webhooks/sendgrid", content=raw, headers=sendgrid_signer.headers(raw)
        )
        assert response.status_code == 200
        assert response.json()["processed"] == 2
        h.settle()
        assert h.rt.store.scheduled_for("crm-1042") == []
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
        h.advance(timedelta(days=30))
    assert _steps(h) == ["outcome-story"]
    stats = h.rt.store.stats()["value-first"]["outcome-story"]
    assert stats["sent"] == 1 and stats["delivered"] == 1


def test_hubspot_workflow_to_outbox_then_one_click_unsubscribe(
    make_harness: Callable[..., Harness],
    serve: Callable[[Runtime], LiveServer],
    crm_dir: Path,
) -> None:
    h = make_harness(crm_dir=crm_dir)
    live = serve(h.rt)
    workflow = {
        "objectId": 1042,
        "properties": {
            "email": {"value": "ann@example.com"},
            "firstname": {"value": "Ann"},
            "company": {"value": "Berg ApS"},
            "hs_language": {"value": "da"},
            "industry": {"value": "saas"},
            "annualrevenue": {"value": "5000"},
        },
    }
    with running(h):
        body = json.dumps(workflow).encode()
        response = live.client.post(
            "/events/hubspot?workflow=new-lead",
            content=body,
            headers=signed_headers(h.rt, body),
        )
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 1
        h.settle()
        h.advance(timedelta(minutes=10))
        assert _steps(h) == ["outcome-story"]

        # The mail client's one-click unsubscribe, exactly as RFC 8058 describes it.
        message = h.messages()[0]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = message["List-Unsubscribe"].strip("<>")
        path = url.removeprefix(h.rt.settings.public_url)
        response = live.client.post(
            path,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200
        assert "Du er afmeldt" in response.text  # the lead's locale
        # The suppression holds at once, before the queue has even processed anything.
        lead = h.rt.store.get_lead("1042")
        assert lead is not None and lead.suppressed == "unsubscribe"
        h.run_until(h.clock.now().timestamp() + 30 * 86400)
        h.advance(timedelta(days=30))
    assert _steps(h) == ["outcome-story"]
