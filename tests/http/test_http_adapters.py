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
    assert [i for i, _ in result.ignored] == [0, 3]
    docs = {i: d for i, d in result.events}
    assert docs[1]["type"] == "lead.created"
    assert docs[1]["lead"] == {"id": "1042", "email": "ann@example.com"}
    assert docs[1]["occurred_at"] == "2026-11-23T09:00:00Z"
    assert docs[2]["type"] == "lead.disqualified"
    assert docs[2]["data"] == {"reason": "unqualified"}
    assert docs[4]["type"] == "lead.updated"
    assert docs[4]["lead"]["attributes"] == {"budget": 1200000}
    assert docs[5]["type"] == "lead.unsubscribed"
    assert len({d["id"] for d in docs.values()}) == 4
    # HubSpot's retry of the same batch yields the same ids (replays are detected).
    again = translate(hubspot, hubspot_notifications(batch, None, hubspot))
    assert [d["id"] for _, d in again.events] == [d["id"] for d in docs.values()]


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
    assert docs[0]["type"] == "lead.unsubscribed"
    assert docs[0]["lead"]["id"] == "42"


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
    assert response.json() == {"accepted": 1, "duplicates": 0, "ignored": 1, "refused": []}
    response = _post(live, harness.rt, "/events/hubspot", batch)
    assert response.json()["duplicates"] == 1
    assert queued_events(harness.rt) == 1


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
