"""HubSpot contacts read through the API, turned into lead events through the mapping.

The glue between :mod:`worker.crm.hubspot_api` (what HubSpot says about each contact) and
the lead events the pipeline takes, so that the webhook's ``crm.changed`` (which only
names a contact) becomes a ``lead.updated`` with every mapped property, or a
``lead.deleted`` when HubSpot no longer has the contact. The field and attribute mapping
is the one of ``crm/hubspot.yaml`` (``fields``, typed ``attributes``), applied by the same
code as webhook payloads (:func:`worker.http.adapters.translate`).

Event ids are derived from the record's ``updatedAt``: reading an unchanged contact again
gives the same id, which the replay guard drops.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from typing import Any

from worker.crm.hubspot_api import ContactResult, Found, Gone
from worker.crm.mapping import Mapping, Rule
from worker.http.adapters import Notification, translate

FETCHED = "contact.fetched"


def mapped_properties(mapping: Mapping) -> list[str]:
    """The HubSpot properties the mapping reads (fields, attributes, event data)."""
    names = {*mapping.fields, *mapping.attributes}
    for rule in mapping.events:
        names.update(rule.data_from.values())
    # Dotted paths (custom_fields.x) are Pipedrive's; HubSpot properties are flat.
    return sorted(name for name in names if "." not in name)


def contact_events(
    mapping: Mapping, results: MappingType[str, ContactResult]
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Lead events for contacts read from HubSpot.

    Args:
        mapping: The HubSpot mapping (``crm/hubspot.yaml``).
        results: :meth:`HubSpotContacts.read_contacts` results, by HubSpot id.

    Returns:
        The events (``POST /events`` format: ``lead.updated`` for a found contact,
        ``lead.deleted`` for one HubSpot no longer has) and (HubSpot id, reason) for each
        contact whose values the mapping cannot read (an attribute that is not a number,
        say): those are for a dead letter, never silently dropped.
    """
    rule = Rule(event=FETCHED, type="lead.updated")
    fetch_mapping = mapping.model_copy(update={"events": [rule]})
    notes: list[Notification] = []
    events: list[dict[str, Any]] = []
    ids: list[str] = []
    for object_id, result in results.items():
        if isinstance(result, Gone):
            events.append(_deleted(mapping, result))
            continue
        assert isinstance(result, Found)
        stamp = result.updated_at.isoformat().replace("+00:00", "Z") if result.updated_at else None
        ids.append(object_id)
        notes.append(
            Notification(
                index=len(notes),
                kind=FETCHED,
                object_type="contact",
                # A merged-away id is answered with the surviving record: the lead is
                # the survivor (folding the merged lead in is the caller's job).
                lead_id=result.record_id,
                event_id=f"hubspot-fetch:{result.record_id}:{stamp or 'unknown'}"[:200],
                occurred_at=stamp,
                # null (unset or cleared in HubSpot) leaves a lead field as it is and
                # removes an attribute, as an emptied value does in a webhook.
                record=dict(result.properties),
            )
        )
    translated = translate(fetch_mapping, notes)
    events.extend(doc for _, doc in translated.events)
    problems = [(ids[index], reason) for index, reason in translated.errors]
    problems += [(ids[index], reason) for index, reason in translated.ignored]
    return events, problems


def _deleted(mapping: Mapping, gone: Gone) -> dict[str, Any]:
    return {
        # One deletion per contact: a second read that finds it gone again is a replay.
        "id": f"hubspot-gone:{gone.id}",
        "type": "lead.deleted",
        "lead": {"id": f"{mapping.lead_id_prefix}{gone.id}"},
        "data": {"reason": "gone-in-crm"},
    }
