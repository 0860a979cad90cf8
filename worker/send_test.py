"""``nurture send-test``: one step's email, rendered for a sample lead, sent to an
address the operator names, through the configured delivery (outbox or SendGrid).

A test send is not a touch: it never touches Redis, so it is not in the idempotency
ledger, the counters or the frequency cap, and no lead is enrolled. Its subject starts
with :data:`TEST_MARK` so nobody takes it for a real email.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from worker.addresses import sendable_address
from worker.catalog import load_and_check
from worker.delivery import Message, SendResult, build_delivery
from worker.errors import CatalogError, NurtureError, SettingsError
from worker.events import Lead
from worker.settings import Settings

#: Put before the subject of every test send.
TEST_MARK = "[TEST] "
#: The lead a test send is rendered for when no ``--lead`` file is given.
SAMPLE_LEAD: dict[str, Any] = {
    "id": "send-test",
    "first_name": "Alex",
    "last_name": "Sample",
    "company": "Example Co",
    "source": "website",
}


def send_test(
    settings: Settings,
    sequence_id: str,
    step_id: str,
    to: str,
    lead_doc: dict[str, Any] | None = None,
) -> tuple[Message, SendResult]:
    """Render one step for a lead and send it to ``to`` as a marked test.

    Args:
        lead_doc: A lead object, or an event holding ``lead`` (and ``data``); its own
            address is ignored: the email goes to ``to`` only.

    Returns:
        The message sent and what the delivery backend reported.

    Raises:
        NurtureError: Naming the unknown sequence or step, or why ``to`` is unsendable.
        SettingsError: A setting sending needs is missing (names the variable).
        DeliveryError: The backend refused or failed (e.g. SendGrid 401).
    """
    try:
        address = sendable_address(to.strip())
    except ValueError as exc:
        raise NurtureError(f"--to: {exc}") from None
    loaded, problems = load_and_check(settings)
    if loaded is None:
        raise CatalogError(problems)
    sequence = loaded.sequence(sequence_id)
    step = loaded.step(sequence, step_id)
    if step.webhook is not None:
        raise NurtureError(
            f"step {step.id!r} is a webhook: it emails no one; `nurture preview {sequence.id} "
            f"--lead FILE --step {step.id}` shows the signed request it would post"
        )
    internal = step.notify is not None  # an internal email: no footer, no unsubscribe
    event_doc = (lead_doc if "lead" in lead_doc else {"lead": lead_doc}) if lead_doc else {}
    data = _lead(event_doc, address)
    unsubscribe_url = "" if internal else f"{settings.public_url}/unsubscribe/TEST"
    email = loaded.renderer.render(
        step.template,
        (step.notify.locale or settings.notify_locale) if step.notify else data.get("locale"),
        {
            "recipient": {"email": address},
            "lead": data,
            "event": {
                "id": "send-test",
                "type": sequence.trigger_event,
                "data": dict(event_doc.get("data") or {}),
            },
            "sequence": {"id": sequence.id, "description": sequence.description},
            "step": {"id": step.id},
            "unsubscribe_url": unsubscribe_url,
            "postal_address": settings.postal_address or "",
        },
        internal=internal,
    )
    if not settings.from_email:
        raise SettingsError("NURTURE_FROM_EMAIL is required for sending; set it in .env")
    message = Message(
        key=f"send-test.{sequence.id}.{step.id}.{uuid.uuid4().hex[:12]}",
        to_email=address,
        to_name=None,
        from_email=settings.from_email,
        from_name=settings.from_name,
        subject=TEST_MARK + email.subject,
        text=email.text,
        html=email.html,
        unsubscribe_url=unsubscribe_url,
        lead_id=str(data.get("id", "send-test")),
        sequence=sequence.id,
        step=step.id,
        categories=("send-test",),
        internal=internal,
    )
    delivery = build_delivery(settings)
    try:
        return message, delivery.send(message)
    finally:
        delivery.close()


def _lead(event_doc: dict[str, Any], address: str) -> dict[str, Any]:
    """The lead of ``--lead`` (or the sample lead) with ``to`` as its address.

    Raises:
        NurtureError: Naming the first field of the lead that is not valid.
    """
    try:
        lead = Lead.model_validate({**(event_doc.get("lead") or SAMPLE_LEAD), "email": address})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise NurtureError(f"--lead: lead.{where}: {first['msg']}") from None
    return lead.model_dump(exclude_none=True)
