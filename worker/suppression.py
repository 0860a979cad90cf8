"""Suppression: unsubscribes, hard bounces, spam reports. Takes effect at once (a flag
the send reservation checks atomically), then ends the lead's enrollments through
the normal event path (a ``lead.unsubscribed`` event with the reason)."""

from __future__ import annotations

from worker.events import validate_event
from worker.ingest import IngestResult, ingest
from worker.runtime import Runtime
from worker.store.leads import SUPPRESSED


def unsubscribe_lead(runtime: Runtime, lead_id: str, reason: str = "unsubscribe") -> bool:
    """Unsubscribe one lead; idempotent. Returns False when the lead is unknown."""
    store = runtime.store
    lead = store.leads.get(lead_id)
    if lead is None:
        return False
    store.leads.set_flags(lead_id, {SUPPRESSED: reason})
    if lead.email:
        store.suppressions.suppress(lead.email, reason)
    _end_enrollments(runtime, lead_id, reason, f"suppress:{reason}:{lead_id}")
    return True


def suppress_address(runtime: Runtime, email: str, reason: str) -> list[str]:
    """Suppress an address (bounce, spam report...) and every lead using it.

    Returns:
        The ids of the leads that use the address.
    """
    store = runtime.store
    store.suppressions.suppress(email, reason)
    lead_ids = store.leads.by_email(email)
    for lead_id in lead_ids:
        store.leads.set_flags(lead_id, {SUPPRESSED: reason})
        _end_enrollments(runtime, lead_id, reason, f"suppress:{reason}:{lead_id}")
    return lead_ids


#: Suppressions SendGrid's ``group_resubscribe`` lifts: only SendGrid's own group
#: unsubscribe. A one-click unsubscribe made here (``unsubscribe``), a global SendGrid
#: unsubscribe, a spam report, a bounce or an erasure is never lifted by it.
LIFTED_BY_GROUP_RESUBSCRIBE = frozenset({"group_unsubscribe"})


def resubscribe_address(runtime: Runtime, email: str) -> list[str]:
    """SendGrid ``group_resubscribe``: lift a suppression that came from SendGrid's group
    unsubscribe, on the address and on the leads using it.

    Enrollments that ended with the unsubscribe stay ended; the lead's next triggering
    event enrolls it again as usual.

    Returns:
        The ids of the leads whose suppression was lifted.
    """
    store = runtime.store
    store.suppressions.lift(email, LIFTED_BY_GROUP_RESUBSCRIBE)
    lifted = []
    for lead_id in store.leads.by_email(email):
        lead = store.leads.get(lead_id)
        if lead is not None and lead.suppressed in LIFTED_BY_GROUP_RESUBSCRIBE:
            store.leads.set_flags(lead_id, {SUPPRESSED: None})
            lifted.append(lead_id)
    return lifted


def _end_enrollments(runtime: Runtime, lead_id: str, reason: str, event_id: str) -> IngestResult:
    event = validate_event(
        {
            "id": event_id,
            "type": "lead.unsubscribed",
            "lead": {"id": lead_id},
            "data": {"reason": reason},
        }
    )
    return ingest(runtime, [event])
