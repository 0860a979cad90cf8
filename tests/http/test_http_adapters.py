"""CRM adapters: HubSpot and Pipedrive payloads through the YAML mappings, as functions
and through the live server (signatures, partial refusals, hot reload)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.conftest import ROOT
from tests.harness import Harness
from tests.http.helpers import LiveServer, queued_events, signed_headers
from worker.catalog import LiveCatalog
from worker.crm.mapping import Mapping, check_mappings, load_mapping
from worker.errors import MappingError
from worker.events import validate_event
from worker.http.adapters import (
    PayloadError,
    hubspot_notifications,
    pipedrive_notifications,
    translate,
)
from worker.http.signatures import hubspot_uri, hubspot_v3_signature
from worker.runtime import Runtime

CUSTOM = "9dc80c50d78a15643bfc4ca79d76156a73a1a3b8"


def _hs(event_id: int, kind: str, object_id: int = 1042, **extra: Any) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "subscriptionId": 25,
        "portalId": 33,
        "appId": 1160452,
        "occurredAt": 1_795_424_400_000,
        "subscriptionType": kind,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM_UI",
        **extra,
    }


def _change(event_id: int, prop: str, value: str, **extra: Any) -> dict[str, Any]:
    return _hs(event_id, "contact.propertyChange", propertyName=prop, propertyValue=value, **extra)


WORKFLOW = {
    "objectId": 1042,
    "properties": {
        "email": {"value": "ann@example.com", "versions": []},
        "firstname": {"value": "Ann"},
        "lastname": "Berg",
        "hs_language": {"value": "da"},
        "industry": {"value": "saas"},
        "annualrevenue": {"value": "800"},
        "numberofemployees": {"value": ""},
        "unmapped": {"value": "whatever"},
    },
}


def _pd_v2(action: str, entity: str, data: Any, previous: Any = None, uid: str = "u1") -> Any:
    return {
        "meta": {
            "action": action,
            "entity": entity,
            "entity_id": str(data["id"]) if data else "0",
            "id": uid,
            "timestamp": "2026-11-23T09:00:00.000Z",
            "version": "2.0",
            "company_id": "1",
            "user_id": "2",
            "type": "general",
            "attempt": 1,
            "change_source": "app",
            "is_bulk_edit": False,
        },
        "data": data,
        "previous": previous,
    }


PERSON_V2 = {
    "id": 42,
    "name": "Ann Berg",
    "first_name": "Ann",
    "last_name": "Berg",
    "emails": [
        {"label": "home", "value": "ann.home@example.com", "primary": False},
        {"label": "work", "value": "ann@example.com", "primary": True},
    ],
    "org_id": 5,
    "custom_fields": {CUSTOM: {"type": "varchar", "value": "saas"}},
}

PERSON_V1 = {
    "v": 1,
    "matches_filters": {"current": []},
    "meta": {
        "v": 1,
        "action": "added",
        "object": "person",
        "id": 43,
        "company_id": 1,
        "user_id": 2,
        "timestamp": 1_795_424_400,
        "timestamp_micro": 1_795_424_400_123_456,
        "change_source": "app",
        "webhook_id": "8",
    },
    "current": {
        "id": 43,
        "first_name": "Bo",
        "last_name": "Ek",
        "email": [{"label": "work", "value": "bo@example.com", "primary": True}],
        "org_name": "Ek AB",
        CUSTOM: "agency",
    },
    "previous": None,
    "event": "added.person",
    "retry": 0,
}


@pytest.fixture
def hubspot() -> Mapping:
    return load_mapping(ROOT / "crm" / "hubspot.yaml", "hubspot")


@pytest.fixture
def pipedrive(crm_dir: Path) -> Mapping:
    path = crm_dir / "pipedrive.yaml"
    path.write_text(
        path.read_text().replace(
            "  # custom_fields.9dc80c50d78a15643bfc4ca79d76156a73a1a3b8: industry",
            f"  custom_fields.{CUSTOM}: industry",
        )
    )
    return load_mapping(path, "pipedrive")


def _events(mapping: Mapping, notes: Any) -> list[dict[str, Any]]:
    result = translate(mapping, notes)
    assert not result.errors, result.errors
    for _, doc in result.events:
        validate_event(doc)  # every produced event is a valid lead event
    return [doc for _, doc in result.events]


# -- HubSpot ---------------------------------------------------------------------------


def test_shipped_mappings_are_valid() -> None:
    assert check_mappings(ROOT / "crm") == []


def test_hubspot_webhooks_api_batch(hubspot: Mapping) -> None:
    batch = [
        _hs(1, "contact.creation"),
        _change(2, "email", "ann@example.com"),
        _change(3, "hs_lead_status", "unqualified"),
        _change(4, "notes_last_updated", "1700000000"),
        _hs(
            5,
            "object.propertyChange",
            objectTypeId="0-1",
            propertyName="annualrevenue",
            propertyValue="1200000",
        ),
        _hs(6, "contact.privacyDeletion", object_id=7),
    ]
    result = translate(hubspot, hubspot_notifications(batch, None, hubspot))
    assert [i for i, _ in result.ignored] == [3]
    docs = {i: d for i, d in result.events}
    # The shipped mapping reads contacts back through the CRM API: creation and changes
    # of mapped properties become crm.changed naming the contact.
    fetch = {"crm": "hubspot", "fetch": True, "object_id": "1042"}
    assert docs[0]["type"] == "crm.changed" and docs[0]["data"] == fetch
    assert docs[1]["type"] == "crm.changed"
    assert docs[1]["lead"] == {"id": "1042", "email": "ann@example.com"}
    assert docs[1]["occurred_at"] == "2026-11-23T09:00:00Z"
    assert docs[2]["type"] == "lead.disqualified"
    assert docs[2]["data"] == {"reason": "unqualified"}
    assert docs[4]["type"] == "crm.changed"
    assert docs[4]["lead"]["attributes"] == {"budget": 1200000}
    assert docs[5]["type"] == "lead.deleted"
    assert docs[5]["data"] == {"reason": "privacy-deletion"}
    assert len({d["id"] for d in docs.values()}) == 5
    # HubSpot's retry of the same batch yields the same ids (replays are detected).
    again = translate(hubspot, hubspot_notifications(batch, None, hubspot))
    assert [d["id"] for _, d in again.events] == [d["id"] for d in docs.values()]


# HubSpot Webhooks API notifications, fields as in
# https://developers.hubspot.com/docs/api-reference/webhooks-webhooks-v3/guide and the
# example body of https://developers.hubspot.com/docs/faq/v1-request-validation; merge
# fields (primaryObjectId, mergedObjectIds, newObjectId, numberOfPropertiesMoved) from
# https://developers.hubspot.com/changelog/new-subscription-types-for-webhooks.
DOC_CREATION = {
    "eventId": 1,
    "subscriptionId": 12345,
    "portalId": 62515,
    "occurredAt": 1564113600000,
    "subscriptionType": "contact.creation",
    "attemptNumber": 0,
    "objectId": 123,
    "changeSource": "CRM",
    "changeFlag": "NEW",
    "appId": 54321,
}

# The rules for reading contacts back through HubSpot's API (docs/crm.md): every
# change of a contact becomes crm.changed naming the contact; the worker fetches it.
API_MODE = """
crm: hubspot
events:
  - event: contact.deletion
    type: lead.deleted
    data: {reason: deleted-in-crm}
  - event: contact.privacyDeletion
    type: lead.deleted
    data: {reason: privacy-deletion}
  - event: contact.merge
    type: crm.changed
    data: {crm: hubspot, fetch: true}
    data_from: {object_id: objectId, merged_ids: mergedObjectIds}
  - event: contact.creation
    type: crm.changed
    data: {crm: hubspot, fetch: true}
    data_from: {object_id: objectId}
  - event: contact.propertyChange
    type: crm.changed
    data: {crm: hubspot, fetch: true}
    data_from: {object_id: objectId}
fields: {email: email, firstname: first_name}
"""


def test_hubspot_deletions_are_lead_deleted(hubspot: Mapping) -> None:
    batch = [
        {**DOC_CREATION, "eventId": 2, "subscriptionType": "contact.deletion", "objectId": 123},
        {**DOC_CREATION, "eventId": 3, "subscriptionType": "contact.privacyDeletion"},
        {
            **DOC_CREATION,
            "eventId": 4,
            "subscriptionType": "object.deletion",
            "objectTypeId": "0-1",
            "objectId": 124,
        },
    ]
    docs = _events(hubspot, hubspot_notifications(batch, None, hubspot))
    assert [d["type"] for d in docs] == ["lead.deleted"] * 3
    assert [d["lead"] for d in docs] == [{"id": "123"}, {"id": "123"}, {"id": "124"}]
    assert [d["data"]["reason"] for d in docs] == [
        "deleted-in-crm",
        "privacy-deletion",
        "deleted-in-crm",
    ]


def test_hubspot_api_mode_changes_name_the_contact_to_fetch(tmp_path: Path) -> None:
    path = tmp_path / "hubspot.yaml"
    path.write_text(API_MODE)
    mapping = load_mapping(path, "hubspot")
    merge = {
        **DOC_CREATION,
        "eventId": 5,
        "subscriptionType": "contact.merge",
        "objectId": 123,
        "primaryObjectId": 123,
        "mergedObjectIds": [122, 121],
        "newObjectId": None,
        "numberOfPropertiesMoved": 4,
    }
    change = _change(6, "firstname", "Ann", object_id=123)
    unmapped = _change(7, "notes_last_updated", "1700000000", object_id=123)
    result = translate(
        mapping, hubspot_notifications([DOC_CREATION, merge, change, unmapped], None, mapping)
    )
    assert result.ignored == [(3, "property notes_last_updated is not mapped")]
    docs = [doc for _, doc in result.events]
    for doc in docs:
        validate_event(doc)
    assert [d["type"] for d in docs] == ["crm.changed"] * 3
    assert docs[0]["lead"] == {"id": "123"}
    assert docs[0]["data"] == {"crm": "hubspot", "fetch": True, "object_id": "123"}
    assert docs[1]["data"] == {
        "crm": "hubspot",
        "fetch": True,
        "object_id": "123",
        "merged_ids": ["122", "121"],
    }
    # The changed value still comes along (a lead field), the fetch brings the rest.
    assert docs[2]["lead"] == {"id": "123", "first_name": "Ann"}
    # A merge that made a new record: the lead is the new record.
    made_new = {**merge, "eventId": 8, "newObjectId": 130}
    (doc,) = _events(mapping, hubspot_notifications(made_new, None, mapping))
    assert doc["lead"]["id"] == "130" and doc["data"]["object_id"] == "130"


def test_hubspot_workflow_webhook(hubspot: Mapping) -> None:
    docs = _events(hubspot, hubspot_notifications(WORKFLOW, "new-lead", hubspot))
    assert len(docs) == 1
    doc = docs[0]
    assert doc["type"] == "lead.created"
    assert doc["lead"] == {
        "id": "1042",
        "email": "ann@example.com",
        "first_name": "Ann",
        "last_name": "Berg",
        "locale": "da",
        # "numberofemployees" is empty: the attribute is removed (null).
        "attributes": {"industry": "saas", "budget": 800, "employees": None},
    }
    other = _events(hubspot, hubspot_notifications(WORKFLOW, None, hubspot))
    assert other[0]["type"] == "lead.updated"
    assert other[0]["id"] != doc["id"]
    disq = {**WORKFLOW, "properties": {"hs_lead_status": "UNQUALIFIED", "hs_object_id": "9"}}
    docs = _events(hubspot, hubspot_notifications(disq, "disqualified", hubspot))
    assert docs[0]["type"] == "lead.disqualified"
    assert docs[0]["data"] == {"reason": "UNQUALIFIED"}


def test_hubspot_bad_values_are_errors_not_crashes(hubspot: Mapping) -> None:
    bad = {"objectId": 1, "properties": {"annualrevenue": "a lot"}}
    result = translate(hubspot, hubspot_notifications(bad, None, hubspot))
    assert result.errors == [(0, "property annualrevenue: 'a lot' is not a number")]
    nameless = {"properties": {"email": "x@example.com"}}
    result = translate(hubspot, hubspot_notifications(nameless, None, hubspot))
    assert "names no lead" in result.errors[0][1]
    with pytest.raises(PayloadError):
        hubspot_notifications([1, 2], None, hubspot)


# -- Pipedrive ------------------------------------------------------------------------


def test_pipedrive_v2_person_and_deal(pipedrive: Mapping) -> None:
    docs = _events(pipedrive, pipedrive_notifications(_pd_v2("create", "person", PERSON_V2)))
    assert docs[0] == {
        "id": "pipedrive:u1",
        "type": "lead.created",
        "lead": {
            "id": "42",
            "email": "ann@example.com",
            "first_name": "Ann",
            "last_name": "Berg",
            "attributes": {"industry": "saas"},
        },
        "occurred_at": "2026-11-23T09:00:00Z",
    }
    won = _pd_v2(
        "change",
        "deal",
        {"id": 7, "status": "won", "person_id": 42, "value": 800},
        {"status": "open"},
        uid="u2",
    )
    docs = _events(pipedrive, pipedrive_notifications(won))
    assert docs[0]["type"] == "deal.won"
    assert docs[0]["lead"]["id"] == "42"
    # A change of another field of a won deal is not a new win.
    renamed = _pd_v2(
        "change", "deal", {"id": 7, "status": "won", "person_id": 42}, {"title": "x"}, uid="u3"
    )
    result = translate(pipedrive, pipedrive_notifications(renamed))
    assert result.events == [] and result.ignored
    lost = _pd_v2(
        "change",
        "deal",
        {"id": 8, "status": "lost", "person_id": 42, "lost_reason": "price"},
        {"status": "open"},
        uid="u4",
    )
    docs = _events(pipedrive, pipedrive_notifications(lost))
    assert docs[0]["type"] == "deal.lost"
    assert docs[0]["data"] == {"reason": "price"}


def test_pipedrive_v1_is_read_as_v2(pipedrive: Mapping) -> None:
    docs = _events(pipedrive, pipedrive_notifications(PERSON_V1))
    assert docs[0]["type"] == "lead.created"
    assert docs[0]["lead"] == {
        "id": "43",
        "email": "bo@example.com",
        "first_name": "Bo",
        "last_name": "Ek",
        "company": "Ek AB",
        "attributes": {"industry": "agency"},
    }
    assert docs[0]["occurred_at"] == "2026-11-23T09:00:00Z"


def test_pipedrive_deleted_person_uses_previous(pipedrive: Mapping) -> None:
    deleted = _pd_v2("delete", "person", None, {"id": 42, "first_name": "Ann"}, uid="u9")
    docs = _events(pipedrive, pipedrive_notifications(deleted))
    assert docs[0]["type"] == "lead.deleted"
    assert docs[0]["lead"]["id"] == "42"


# Pipedrive persons: webhooks v2 send ``emails`` as a list of {label, value, primary}
# (https://pipedrive.readme.io/docs/guide-for-webhooks-v2,
# https://pipedrive.readme.io/docs/webhooks-v2-migration-guide); v1 sends ``email`` in
# the same shape (https://pipedrive.readme.io/docs/guide-for-webhooks). A v1 person
# without an address is read both as an empty list and as one blank primary entry (the
# pages give no example; docs/crm.md).


def test_pipedrive_person_without_email_is_a_lead_without_address(pipedrive: Mapping) -> None:
    nameless = {**PERSON_V2, "emails": []}
    docs = _events(pipedrive, pipedrive_notifications(_pd_v2("create", "person", nameless)))
    assert docs[0]["type"] == "lead.created"
    assert "email" not in docs[0]["lead"]
    assert docs[0]["lead"]["first_name"] == "Ann"
    v1 = {
        **PERSON_V1,
        "current": {**PERSON_V1["current"], "email": [{"value": "", "primary": True}]},
    }
    docs = _events(pipedrive, pipedrive_notifications(v1))
    assert docs[0]["type"] == "lead.created" and "email" not in docs[0]["lead"]
    # The address added later arrives as change.person with the address.
    added = _pd_v2(
        "change",
        "person",
        {**PERSON_V2, "emails": [{"label": "work", "value": "ann@example.com", "primary": True}]},
        {"emails": []},
        uid="u7",
    )
    docs = _events(pipedrive, pipedrive_notifications(added))
    assert docs[0]["type"] == "lead.updated"
    assert docs[0]["lead"]["email"] == "ann@example.com"


def test_pipedrive_primary_address_first_blank_ones_dropped(pipedrive: Mapping) -> None:
    emails = [
        {"label": "home", "value": "", "primary": False},
        {"label": "other", "value": "ann.other@example.com", "primary": False},
        {"label": "work", "value": "ann@example.com", "primary": True},
    ]
    v2 = _pd_v2("create", "person", {**PERSON_V2, "emails": emails})
    (note,) = pipedrive_notifications(v2)
    assert [e["value"] for e in note.record["emails"]] == [
        "ann@example.com",
        "ann.other@example.com",
    ]
    assert _events(pipedrive, [note])[0]["lead"]["email"] == "ann@example.com"
    # Plain strings are addresses too.
    plain = _pd_v2("create", "person", {**PERSON_V2, "emails": ["", "ann@example.com"]})
    assert _events(pipedrive, pipedrive_notifications(plain))[0]["lead"]["email"] == (
        "ann@example.com"
    )
    # No primary flagged: the first non-blank one.
    v1 = {**PERSON_V1, "current": {**PERSON_V1["current"], "email": emails[:2]}}
    assert _events(pipedrive, pipedrive_notifications(v1))[0]["lead"]["email"] == (
        "ann.other@example.com"
    )


def test_pipedrive_deletions_v1_and_v2_are_lead_deleted(pipedrive: Mapping) -> None:
    v1 = {
        **PERSON_V1,
        "meta": {**PERSON_V1["meta"], "action": "deleted"},
        "current": None,
        "previous": PERSON_V1["current"],
        "event": "deleted.person",
    }
    docs = _events(pipedrive, pipedrive_notifications(v1))
    assert docs[0]["type"] == "lead.deleted"
    # The person is named by the previous values; no personal data rides along.
    assert docs[0]["lead"] == {"id": "43"}
    assert docs[0]["data"] == {"reason": "deleted-in-crm"}
    # v2 with neither data nor previous: the person is named by meta.entity_id.
    bare = _pd_v2("delete", "person", None, None, uid="u10")
    bare["meta"]["entity_id"] = "44"
    docs = _events(pipedrive, pipedrive_notifications(bare))
    assert docs[0]["type"] == "lead.deleted" and docs[0]["lead"] == {"id": "44"}


def test_pipedrive_v2_merge_is_not_a_deletion(pipedrive: Mapping) -> None:
    # https://pipedrive.readme.io/docs/webhooks-v2-migration-guide: v2 has no merged
    # action; the merged-away object's delete names the survivor in meta.merged_to_id.
    merged = _pd_v2("delete", "person", None, {"id": 45, "first_name": "Ann"}, uid="u11")
    merged["meta"]["merged_to_id"] = "42"
    (note,) = pipedrive_notifications(merged)
    assert note.kind == "merge.person"
    assert note.record == {"merged_to_id": "42"}
    result = translate(pipedrive, [note])
    # The shipped mapping has no rule for it: ignored, never a lead.deleted that would
    # suppress an address the surviving person still has.
    assert result.events == [] and result.ignored == [(0, "no rule maps merge.person")]


def test_pipedrive_not_a_webhook() -> None:
    with pytest.raises(PayloadError):
        pipedrive_notifications({"hello": "world"})


# -- mapping files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("crm: hubspot\nevents: [{event: a, type: Lead}]\n", "lowercase dotted"),
        (
            "crm: hubspot\nevents: [{event: a, type: lead.created}]\nfields: {x: phone}\n",
            "not a lead field",
        ),
        ("crm: hubspot\nevents: [{event: a, type: lead.created, colour: red}]\n", "unknown key"),
        ("crm: hubspot\nevents: []\n", "events"),
        ("crm: hubspot\nevents: [{event: a, type: lead.created, value: x}]\n", "need a"),
        ("crm: hubspot\nevents:\n  - event: a\n   type: b\n", ":4:"),
        (
            "crm: pipedrive\nevents: [{event: a, type: lead.created}]\nlead_id: [id]\n",
            "for pipedrive",
        ),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_mapping_errors_name_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "hubspot.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_mapping_file_reloads_and_keeps_last_good(
    make_settings: Callable[..., Any], crm_dir: Path
) -> None:
    """Mappings reload through the LiveCatalog, like sequences and templates."""
    path = crm_dir / "hubspot.yaml"
    watched = LiveCatalog(make_settings(crm_dir=crm_dir))
    first = watched.mapping("hubspot")
    assert first is not None and watched.last_problems == []
    path.write_text("crm: hubspot\nevents: [{event: workflow, type: lead.replied}]\n")
    second = watched.mapping("hubspot")
    assert second is not None and second.events[0].type == "lead.replied"
    path.write_text("crm: hubspot\nevents: oops\n")
    assert watched.mapping("hubspot") is second
    error = "\n".join(str(p) for p in watched.last_problems)
    assert error and "hubspot.yaml" in error


# -- through the live server -----------------------------------------------------------


def _post(live: LiveServer, rt: Runtime, path: str, payload: Any) -> httpx.Response:
    body = json.dumps(payload).encode()
    return live.client.post(path, content=body, headers=signed_headers(rt, body))


def test_live_hubspot_batch(live: LiveServer, harness: Harness) -> None:
    batch = [_hs(1, "contact.creation"), _change(2, "email", "ann@example.com")]
    response = _post(live, harness.rt, "/events/hubspot", batch)
    assert response.status_code == 202, response.text
    # Both name the contact to read back (crm.changed, the shipped mapping).
    assert response.json() == {"accepted": 2, "duplicates": 0, "ignored": 0, "refused": []}
    response = _post(live, harness.rt, "/events/hubspot", batch)
    assert response.json()["duplicates"] == 2
    assert queued_events(harness.rt) == 2


def test_live_hubspot_workflow_query(live: LiveServer, harness: Harness) -> None:
    response = _post(live, harness.rt, "/events/hubspot?workflow=new-lead", WORKFLOW)
    assert response.json()["accepted"] == 1
    response = _post(live, harness.rt, "/events/hubspot?workflow=bad%20name", WORKFLOW)
    assert response.status_code == 400


def test_live_partial_refusal_keeps_dead_letters(live: LiveServer, harness: Harness) -> None:
    batch = [_change(1, "email", "not-an-email"), _change(2, "email", "ann@example.com")]
    response = _post(live, harness.rt, "/events/hubspot", batch)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert body["refused"][0]["index"] == 0
    assert "not an email address" in body["refused"][0]["reason"]
    assert [d["kind"] for d in harness.dead_letters()] == ["crm:hubspot"]
    # All bad: a 400 and nothing kept.
    response = _post(live, harness.rt, "/events/hubspot", [_change(3, "email", "nope")])
    assert response.status_code == 400
    assert response.json()["errors"][0]["index"] == 0
    assert len(harness.dead_letters()) == 1


def test_live_pipedrive(live: LiveServer, harness: Harness) -> None:
    response = _post(live, harness.rt, "/events/pipedrive", _pd_v2("create", "person", PERSON_V2))
    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    response = _post(live, harness.rt, "/events/pipedrive", {"not": "pipedrive"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"


def test_live_pipedrive_person_without_email_is_accepted(
    live: LiveServer, harness: Harness
) -> None:
    nameless = _pd_v2("create", "person", {**PERSON_V2, "emails": []}, uid="u-noemail")
    response = _post(live, harness.rt, "/events/pipedrive", nameless)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1 and response.json()["refused"] == []


def test_live_hubspot_deletions_are_queued(live: LiveServer, harness: Harness) -> None:
    batch = [
        {**DOC_CREATION, "eventId": 11, "subscriptionType": "contact.deletion"},
        {**DOC_CREATION, "eventId": 12, "subscriptionType": "contact.privacyDeletion"},
    ]
    response = _post(live, harness.rt, "/events/hubspot", batch)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "ignored": 0, "refused": []}
    assert queued_events(harness.rt) == 2


def test_live_adapters_need_a_signature(live: LiveServer, harness: Harness) -> None:
    for path in ("/events/hubspot", "/events/pipedrive"):
        response = live.client.post(path, json=WORKFLOW)
        assert response.status_code == 401
        assert response.json()["error"] == "signature_missing"
    assert queued_events(harness.rt) == 0


def test_live_missing_mapping_is_a_clear_503(
    make_harness: Callable[..., Harness], serve: Callable[[Runtime], LiveServer], tmp_path: Path
) -> None:
    harness = make_harness(crm_dir=tmp_path / "nowhere")
    live = serve(harness.rt)
    response = _post(live, harness.rt, "/events/hubspot", WORKFLOW)
    assert response.status_code == 503
    assert response.json()["error"] == "adapter_not_configured"
    assert "hubspot.yaml" in response.json()["message"]


def test_live_crm_native_auth(
    make_settings: Callable[..., Any], serve: Callable[[Runtime], LiveServer], crm_dir: Path
) -> None:
    settings = make_settings(crm_dir=crm_dir).model_copy(
        update={
            "hubspot_client_secret": SecretStr("hs-secret"),
            "pipedrive_webhook_auth": SecretStr("pd:pw"),
        }
    )
    runtime = Runtime(settings, load_catalog=False)
    try:
        live = serve(runtime)
        body = json.dumps(WORKFLOW).encode()
        ts = str(int(runtime.clock.now().timestamp() * 1000))
        uri = hubspot_uri(settings.public_url, "/events/hubspot", "workflow=new-lead")
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": hubspot_v3_signature("hs-secret", "POST", uri, body, ts),
            "X-HubSpot-Request-Timestamp": ts,
        }
        response = live.client.post(
            "/events/hubspot?workflow=new-lead", content=body, headers=headers
        )
        assert response.status_code == 202, response.text
        # The query is signed too: another workflow name breaks the signature.
        response = live.client.post(
            "/events/hubspot?workflow=customer", content=body, headers=headers
        )
        assert response.status_code == 401

        body = json.dumps(_pd_v2("create", "person", PERSON_V2)).encode()
        auth = "Basic " + base64.b64encode(b"pd:pw").decode()
        response = live.client.post(
            "/events/pipedrive",
            content=body,
            headers={"Content-Type": "application/json", "Authorization": auth},
        )
        assert response.status_code == 202, response.text
        wrong = "Basic " + base64.b64encode(b"pd:nope").decode()
        response = live.client.post(
            "/events/pipedrive",
            content=body,
            headers={"Content-Type": "application/json", "Authorization": wrong},
        )
        assert response.status_code == 401
    finally:
        runtime.close()
