"""Shared pieces of the tests of issue 14 (sequences that respond)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.http.helpers import LiveServer, SendgridSigner
from tests.sendgrid_standin import Received

TEXT_TEMPLATE = """{%% block subject %%}%(subject)s{%% endblock %%}
{%% block text %%}
Hi {{ lead | first_name("there") }},

%(body)s

The team
{%% endblock %%}
"""


def write_template(templates: Path, name: str, subject: str, body: str) -> None:
    """A short English template ``name`` (e.g. ``test/clicked``) in a test's templates copy."""
    path = templates / f"{name}.j2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEXT_TEMPLATE % {"subject": subject, "body": body}, encoding="utf-8")


def sendgrid_event(message: Received, event: str, sg_id: str, **extra: Any) -> dict[str, Any]:
    """One Event Webhook event for a message the stand-in received, as SendGrid sends it:
    the message's ``custom_args`` come back as top-level fields of every event
    (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event)."""
    return {
        "email": message.to[0],
        "timestamp": 1_700_000_000,
        "event": event,
        "sg_event_id": sg_id,
        "sg_message_id": "msg." + sg_id,
        **message.custom_args,
        **extra,
    }


def post_events(
    live: LiveServer, signer: SendgridSigner, events: list[dict[str, Any]]
) -> httpx.Response:
    """POST a signed batch to the running service's ``/webhooks/sendgrid``."""
    body = json.dumps(events).encode()
    return live.client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))
