"""CRM adapters: HubSpot's and Pipedrive's own webhook payloads become lead events,
through a YAML field mapping marketing ops can edit (``crm/hubspot.yaml``,
``crm/pipedrive.yaml``).

Each adapter first reads the CRM's payload into :class:`Notification` objects (one per
CRM event: what happened, to which record, with which property values), then the
mapping's ``events`` rules pick the lead event type (first match wins; no match means
the notification is ignored) and its ``fields`` / ``attributes`` pick what is copied
onto the lead. The result is plain event dicts in the format of ``POST /events``,
validated by the same code.

Shapes read (see docs/http.md for examples):

- HubSpot Webhooks API: a JSON array of notifications with ``subscriptionType``,
  ``objectId``, ``eventId``, ``occurredAt`` and, for property changes, ``propertyName``
  / ``propertyValue``. Generic ``object.*`` subscriptions are named after their
  ``objectTypeId`` (``0-1`` contact, ``0-3`` deal...), so ``contact.creation`` rules
  match both formats.
- HubSpot workflow "Send a webhook" action: one record (or an array of them) with
  ``properties`` (plain values or ``{"value": ...}``) or custom top-level keys. Its
  CRM event name is ``workflow``, or ``workflow:<name>`` when the URL has
  ``?workflow=<name>``, so each workflow can map to its own lead event type.
- Pipedrive webhooks v2 (``meta.action``/``meta.entity``, ``data``, ``previous``) and
  v1 (``meta.action``/``meta.object``, ``current``, ``previous``); v1 names are turned
  into v2's (``added``→``create``, ``updated``/``merged``→``change``,
  ``deleted``→``delete``; ``email``→``emails``; custom-field keys → ``custom_fields``).
  A person's ``emails`` keep only non-blank addresses, the primary one first; a person
  with none has no ``emails`` at all (the lead has no address yet).
  A v2 ``delete`` whose ``meta`` names ``merged_to_id`` is a merge: ``merge.<object>``,
  with ``merged_to_id`` in the record.
- HubSpot ``contact.merge``: the lead is the surviving record (``newObjectId``, else
  ``primaryObjectId``); ``mergedObjectIds``, ``primaryObjectId``, ``newObjectId`` and every
  notification's ``objectId`` are in the record, for rules' ``data_from``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.crm.mapping import Attribute, Mapping, Rule
from worker.errors import PayloadError

WORKFLOW_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_NOTIFICATIONS = 1000

# HubSpot's objectTypeId of the generic ``object.*`` subscriptions -> legacy object name.
HUBSPOT_OBJECT_TYPES = {"0-1": "contact", "0-2": "company", "0-3": "deal", "0-5": "ticket"}
PIPEDRIVE_V1_ACTIONS = {
    "added": "create",
    "updated": "change",
    "merged": "change",
    "deleted": "delete",
}
_PIPEDRIVE_CUSTOM_KEY = re.compile(r"^[0-9a-f]{40}$")

_MISSING: Any = object()


# -- reading CRM payloads ---------------------------------------------------------------


@dataclass
class Notification:
    """One CRM event, read from the CRM's payload.

    Attributes:
        index: Position in the CRM's batch.
        kind: The CRM event name rules match on (``contact.propertyChange``,
            ``change.deal``, ``workflow:new-lead``...).
        object_type: contact, deal, person...
        lead_id: The CRM id of the lead (None when the payload does not say).
        event_id: Stable id for replay detection (the CRM's retries get the same one).
        occurred_at: RFC 3339 time of the change, when the CRM says.
        record: Current property values.
        previous: Previous property values (Pipedrive), else None.
        changed_property: HubSpot property-change notifications: the property changed.
    """

    index: int
    kind: str
    object_type: str
    lead_id: str | None
    event_id: str
    occurred_at: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] | None = None
    changed_property: str | None = None


def _iso_from_ms(value: Any) -> str | None:
    try:
        stamp = float(value) / 1000
        if not math.isfinite(stamp):
            return None
        return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _iso_from_text(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _iso_from_ms(value * 1000)
    if not isinstance(value, str):
        return None
    if value.isdigit():
        return _iso_from_ms(int(value) * 1000)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # Pipedrive's times are UTC
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _digest(obj: Any) -> str:
    raw = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:24]


def _id_text(value: Any) -> str | None:
    value = _unwrap(value)
    if value is None or value is _MISSING or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def hubspot_notifications(
    payload: Any, workflow: str | None, mapping: Mapping
) -> list[Notification]:
    """Read a HubSpot webhook body (Webhooks API batch or workflow webhook).

    Raises:
        PayloadError: When the body is neither shape.
    """
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadError(f"batch of {len(items)} notifications; at most {MAX_NOTIFICATIONS}")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise PayloadError(f"item {index}: expected a JSON object, got {type(item).__name__}")
        if "subscriptionType" in item:
            out.append(_hubspot_api(index, item))
        else:
            out.append(_hubspot_workflow(index, item, workflow, mapping))
    return out


def _hubspot_api(index: int, item: dict[str, Any]) -> Notification:
    kind = str(item.get("subscriptionType"))
    obj, _, action = kind.partition(".")
    if obj == "object":
        obj = HUBSPOT_OBJECT_TYPES.get(str(item.get("objectTypeId")), "object")
        kind = f"{obj}.{action}"
    object_id = _id_text(item.get("objectId"))
    prop = item.get("propertyName")
    # The ids go in the record too, so a rule's data_from can copy them into event.data
    # (the worker reads the record back from HubSpot's API by this id).
    record: dict[str, Any] = {"objectId": object_id}
    if isinstance(prop, str) and prop:
        record[prop] = item.get("propertyValue")
    lead_id = object_id
    if action == "merge":
        # The merged records become one lead: the surviving record (a new one when HubSpot
        # made one), with the ids merged into it.
        merged = item.get("mergedObjectIds")
        record["mergedObjectIds"] = [
            text
            for text in (_id_text(i) for i in (merged if isinstance(merged, list) else []))
            if text
        ]
        record["primaryObjectId"] = _id_text(item.get("primaryObjectId"))
        record["newObjectId"] = _id_text(item.get("newObjectId"))
        lead_id = record["newObjectId"] or record["primaryObjectId"] or object_id
        record["objectId"] = lead_id
    parts = [
        item.get("portalId"),
        kind,
        object_id,
        item.get("eventId"),
        item.get("occurredAt"),
        prop if isinstance(prop, str) else None,
    ]
    return Notification(
        index=index,
        kind=kind,
        object_type=obj,
        lead_id=lead_id,
        event_id="hubspot:" + ":".join("" if p is None else str(p) for p in parts)[:180],
        occurred_at=_iso_from_ms(item.get("occurredAt")),
        record=record,
        changed_property=prop if isinstance(prop, str) and prop else None,
    )


def _hubspot_workflow(
    index: int, item: dict[str, Any], workflow: str | None, mapping: Mapping
) -> Notification:
    props = item.get("properties")
    record: dict[str, Any] = (
        {k: _unwrap(v) for k, v in props.items()} if isinstance(props, dict) else {}
    )
    # Custom request bodies put chosen properties at the top level.
    for key, value in item.items():
        if key != "properties":
            record.setdefault(key, _unwrap(value))
    lead_id = None
    for name in mapping.lead_id:
        lead_id = _id_text(_lookup(item, name)) or _id_text(_lookup(record, name))
        if lead_id:
            break
    kind = f"workflow:{workflow}" if workflow else "workflow"
    return Notification(
        index=index,
        kind=kind,
        object_type="contact",
        lead_id=lead_id,
        # No event id in workflow webhooks: HubSpot's retries repeat the same body.
        event_id=f"hubspot-wf:{kind}:{lead_id}:{_digest(item)}"[:200],
        record=record,
    )


def pipedrive_notifications(payload: Any) -> list[Notification]:
    """Read a Pipedrive webhook body (v2, or v1 translated to v2's names).

    Raises:
        PayloadError: When the body is not a Pipedrive webhook.
    """
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadError(f"batch of {len(items)} notifications; at most {MAX_NOTIFICATIONS}")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("meta"), dict):
            raise PayloadError(
                f"item {index}: not a Pipedrive webhook (expected an object with meta)"
            )
        out.append(_pipedrive_one(index, item))
    return out


def _pipedrive_one(index: int, item: dict[str, Any]) -> Notification:
    meta: dict[str, Any] = item["meta"]
    v2 = "data" in item or str(meta.get("version", "")).startswith("2")
    if v2:
        action = str(meta.get("action") or "")
        entity = str(meta.get("entity") or "")
        record = item.get("data") if isinstance(item.get("data"), dict) else {}
        previous = item.get("previous") if isinstance(item.get("previous"), dict) else None
        entity_id = meta.get("entity_id")
        merged_to = _id_text(meta.get("merged_to_id"))
        if action == "delete" and merged_to:
            # v2 reports a merge as a delete of the merged-away object that names the
            # survivor: not a deletion of the person (whose address lives on).
            action = "merge"
            record = {**(record or {}), "merged_to_id": merged_to}
        stamp = meta.get("timestamp")
        event_id = (
            f"pipedrive:{meta['id']}"
            if _id_text(meta.get("id"))
            else f"pipedrive:{entity}:{meta.get('entity_id')}:{action}:{stamp}"
        )
    else:
        raw_action = str(meta.get("action") or "")
        action = PIPEDRIVE_V1_ACTIONS.get(raw_action, raw_action)
        entity = str(meta.get("object") or "")
        record = _pipedrive_v1_record(item.get("current"))
        previous = (
            _pipedrive_v1_record(item.get("previous"))
            if isinstance(item.get("previous"), dict)
            else None
        )
        entity_id = meta.get("id")  # v1's meta.id is the object's id
        stamp = meta.get("timestamp")
        micro = meta.get("timestamp_micro") or stamp
        event_id = f"pipedrive:v1:{entity}:{meta.get('id')}:{raw_action}:{micro}"
    if not action or not entity:
        raise PayloadError(f"item {index}: meta has no action/entity")
    assert isinstance(record, dict)
    if action == "delete" and not record and not previous and _id_text(entity_id):
        # A deletion must always name its object, even when no field values came with it.
        previous = {"id": entity_id}
    return Notification(
        index=index,
        kind=f"{action}.{entity}",
        object_type=entity,
        lead_id=None,  # filled in from the mapping's lead_id
        event_id=event_id[:200],
        occurred_at=_iso_from_text(stamp),
        record=_primary_first(record),
        previous=_primary_first(previous) if previous is not None else None,
    )


def _pipedrive_v1_record(current: Any) -> dict[str, Any]:
    if not isinstance(current, dict):
        return {}
    record: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in current.items():
        if _PIPEDRIVE_CUSTOM_KEY.match(key):
            custom[key] = value
        elif key == "email":
            record["emails"] = value
        elif key == "phone":
            record["phones"] = value
        else:
            record[key] = value
    if custom:
        record["custom_fields"] = custom
    return record


def _primary_first(record: dict[str, Any]) -> dict[str, Any]:
    """A person's ``emails`` with blank entries dropped and the primary one first; no
    ``emails`` key at all when none is left, so a person without an address is a lead
    without an email (never the text "[]")."""
    emails = record.get("emails")
    if "emails" not in record or not isinstance(emails, list | str | type(None)):
        return record
    out = dict(record)
    if isinstance(emails, list):
        entries = [{"value": e} if isinstance(e, str) else e for e in emails]
        kept = [
            e
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("value"), str) and e["value"].strip()
        ]
        kept.sort(key=lambda e: e.get("primary") is not True)  # stable: primary first
        if kept:
            out["emails"] = kept
            return out
    elif isinstance(emails, str) and emails.strip():
        return out
    del out["emails"]
    return out


# -- applying the mapping -----------------------------------------------------------------


@dataclass
class Translation:
    """What a CRM batch became.

    Attributes:
        events: Event dicts (``POST /events`` format), each with its CRM batch index.
        ignored: (index, reason) of notifications no rule maps.
        errors: (index, reason) of notifications a rule maps but that cannot be read.
    """

    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    ignored: list[tuple[int, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def translate(mapping: Mapping, notifications: Iterable[Notification]) -> Translation:
    """Turn notifications into lead events through the mapping's rules."""
    result = Translation()
    for note in notifications:
        if mapping.crm == "pipedrive" and isinstance(mapping.lead_id, dict):
            source = mapping.lead_id.get(note.object_type)
            if source:
                note.lead_id = _id_text(_lookup(note.record, source))
                if note.lead_id is None and note.previous:
                    note.lead_id = _id_text(_lookup(note.previous, source))
        rule = next((r for r in mapping.events if _matches(r, note)), None)
        if rule is None:
            result.ignored.append((note.index, f"no rule maps {note.kind}"))
            continue
        if (
            note.changed_property
            and rule.property is None
            and not mapping.maps(note.changed_property)
        ):
            result.ignored.append((note.index, f"property {note.changed_property} is not mapped"))
            continue
        if not note.lead_id:
            result.errors.append(
                (note.index, f"{note.kind}: the payload names no lead (check lead_id)")
            )
            continue
        try:
            result.events.append((note.index, _build_event(mapping, rule, note)))
        except ValueError as exc:
            result.errors.append((note.index, str(exc)))
    return result


def _matches(rule: Rule, note: Notification) -> bool:
    if rule.event != note.kind:
        return False
    if rule.property is None:
        return True
    if note.changed_property is not None and note.changed_property != rule.property:
        return False
    current = _lookup(note.record, rule.property)
    if current is _MISSING:
        return False
    accepted = rule.values()
    if accepted is not None and _text(current).lower() not in accepted:
        return False
    if rule.changed:
        if note.previous is None:
            return False
        before = _lookup(note.previous, rule.property)
        if before is _MISSING or _text(before) == _text(current):
            return False
    return True


def _build_event(mapping: Mapping, rule: Rule, note: Notification) -> dict[str, Any]:
    lead: dict[str, Any] = {"id": f"{mapping.lead_id_prefix}{note.lead_id}"}
    for source, target in mapping.fields.items():
        value = _lookup(note.record, source)
        if value is _MISSING or value is None:
            continue
        text = _text(value).strip()
        if text:  # an emptied CRM field leaves ours unchanged
            lead[target] = text
    attributes: dict[str, Any] = {}
    for source in mapping.attributes:
        value = _lookup(note.record, source)
        if value is _MISSING:
            continue
        attribute = mapping.attribute(source)
        attributes[attribute.name] = _coerce(value, attribute, source)
    if attributes:
        lead["attributes"] = attributes
    data = dict(rule.data)
    for key, source in rule.data_from.items():
        value = _lookup(note.record, source)
        if value is not _MISSING and value is not None:
            data[key] = _unwrap(value)
    event: dict[str, Any] = {"id": note.event_id, "type": rule.type, "lead": lead}
    if data:
        event["data"] = data
    if note.occurred_at:
        event["occurred_at"] = note.occurred_at
    return event


def _lookup(record: dict[str, Any], path: str) -> Any:
    """A property by name or dotted path (``custom_fields.<key>``), unwrapped."""
    if path in record:
        return _unwrap(record[path])
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = _unwrap(node[part])
    return node


def _unwrap(value: Any) -> Any:
    """CRM value wrappers -> the value: ``{"value": x}`` and lists of them (primary first)."""
    if isinstance(value, dict) and "value" in value:
        return _unwrap(value["value"])
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and "value" in v for v in value)
    ):
        primary = next((v for v in value if v.get("primary") is True), value[0])
        return _unwrap(primary["value"])
    return value


def _text(value: Any) -> str:
    value = _unwrap(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def _coerce(value: Any, target: Attribute, source: str) -> Any:
    """A CRM value as the attribute's type; empty means "remove the attribute"."""
    value = _unwrap(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if target.type == "string":
        return _text(value)
    if target.type == "boolean":
        text = _text(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"property {source}: {value!r} is not a yes/no value")
    text = _text(value).strip().replace(",", "") if isinstance(value, str) else value
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"property {source}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"property {source}: {value!r} is not a finite number")
    if target.type == "integer":
        if not number.is_integer():
            raise ValueError(f"property {source}: {value!r} is not a whole number")
        return int(number)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number
