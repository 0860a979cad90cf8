"""Queue glue for HubSpot's CRM API: ``crm.changed`` events become reads of the contacts.

A HubSpot webhook only names a contact (``contact.creation`` carries no email, a
``contact.propertyChange`` one property). The shipped mapping turns those notifications
into ``crm.changed`` events; :func:`fetch_requests` takes them out of an events batch,
and the ``fetch_contacts`` actor (queue ``crm``, declared in :mod:`worker.actors`) reads
every mapped property of the contacts named in one batch request, turns the answers into
``lead.updated`` / ``lead.deleted`` (:func:`worker.crm.hubspot_fetch.contact_events`)
and applies them. The webhook request never waits on HubSpot.

Nothing is dropped: HubSpot down, slow or rate limited means a retry with backoff
(``Retry-After`` honoured, the shared :class:`HubSpotRateLimiter` keeps every worker
under HubSpot's limit); a fault only a person can fix (a missing or revoked token, a
missing scope) holds the work and logs an ERROR naming ``NURTURE_HUBSPOT_TOKEN``,
retrying every few minutes until it is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import redis

from worker.crm.hubspot_api import (
    HubSpotConfigError,
    HubSpotContacts,
    HubSpotUnavailableError,
)
from worker.crm.hubspot_fetch import contact_events, mapped_properties
from worker.crm.mapping import Mapping
from worker.errors import EventError, MappingError, SettingsError
from worker.events import Event, validate_event
from worker.pipeline import EventProcessor

log = logging.getLogger(__name__)

FETCH_QUEUE = "crm"
#: A fault only a person can fix is retried this often (milliseconds) until fixed.
CONFIG_HOLD_MS = 300_000
#: Backoff of HubSpot outages: 1 s doubling up to 10 minutes, for as long as it lasts.
FETCH_OPTIONS: dict[str, Any] = {"min_backoff": 1_000, "max_backoff": 600_000}
#: Failures that are not HubSpot's or Redis's (a bug) give up after this many retries,
#: ending as a dead letter.
OTHER_FAILURE_RETRIES = 20

#: What a fetch request is: the HubSpot id to read and the ids merged into it.
FetchRequest = dict[str, Any]


def is_fetch(event: Event) -> bool:
    """Whether the event asks for the CRM record to be read (HubSpot ``crm.changed``)."""
    return event.type == "crm.changed" and event.data.get("crm", "hubspot") == "hubspot"


def fetch_request(event: Event) -> FetchRequest:
    """The fetch request of a ``crm.changed`` event (its ``data.object_id``, else the
    lead id, and ``data.merged_ids``)."""
    merged = event.data.get("merged_ids")
    return {
        "id": str(event.data.get("object_id") or event.lead.id),
        "merged": [str(m) for m in merged] if isinstance(merged, list) else [],
    }


def keep_retrying(retries: int, exception: BaseException) -> bool:
    """dramatiq's ``retry_when`` for ``fetch_contacts``: HubSpot and Redis faults are
    retried for as long as they last (the work is held, never dropped); anything else
    (a bug) :data:`OTHER_FAILURE_RETRIES` times, then it is a dead letter."""
    if isinstance(exception, dramatiq.Retry | HubSpotUnavailableError | redis.RedisError):
        return True
    return retries < OTHER_FAILURE_RETRIES


def fetch_handler(
    processor: EventProcessor,
    reader: Callable[[], HubSpotContacts],
    mapping: Callable[[], Mapping],
    dead_letter: Callable[[str, str, dict[str, Any]], None],
) -> Callable[[list[FetchRequest]], None]:
    """The body of ``fetch_contacts``.

    Args:
        processor: Applies the events read.
        reader: Returns the HubSpot reader (built from the settings at first use).
        mapping: Returns the HubSpot mapping running now (``crm/hubspot.yaml``).
        dead_letter: Keeps a value the mapping cannot read (kind, reason, payload).
    """

    def fetch_contacts(requests: list[FetchRequest]) -> None:
        try:
            hubspot = mapping()
            contacts = reader()
        except (SettingsError, MappingError) as exc:
            hold(exc)
        prefix = hubspot.lead_id_prefix
        for request in requests:
            for merged in request.get("merged", []):
                if str(merged) != str(request["id"]):
                    processor.fold(f"{prefix}{merged}", f"{prefix}{request['id']}")
        ids = [str(request["id"]) for request in requests]
        try:
            results = contacts.read_contacts(ids, mapped_properties(hubspot))
        except HubSpotUnavailableError as exc:
            log.warning("HubSpot contacts %s not read yet: %s", ",".join(ids[:5]), exc)
            if exc.retry_after:
                raise dramatiq.Retry(str(exc), delay=int(exc.retry_after * 1000)) from None
            raise
        except HubSpotConfigError as exc:
            hold(exc)
        events, problems = contact_events(hubspot, results)
        for object_id, reason in problems:
            dead_letter("hubspot", reason, {"hubspot_id": object_id})
        for index, doc in enumerate(events):
            try:
                event = validate_event(doc, index)
            except EventError as exc:
                dead_letter("hubspot", str(exc), {"event": doc})
                continue
            log.debug("hubspot %s: %s", event.lead.id, processor.process(event))

    return fetch_contacts


def hold(exc: Exception) -> Any:
    """Hold the work for a fault only a person can fix: an ERROR line, a retry later."""
    log.error(
        "HubSpot contacts cannot be read: %s. The changes are kept and read again every "
        "%d minutes; check NURTURE_HUBSPOT_TOKEN (scope crm.objects.contacts.read), "
        "NURTURE_HUBSPOT_API_URL and crm/hubspot.yaml (docs/crm.md)",
        exc,
        CONFIG_HOLD_MS // 60_000,
    )
    raise dramatiq.Retry(str(exc), delay=CONFIG_HOLD_MS) from None
