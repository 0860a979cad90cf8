"""POST /events through a real uvicorn: formats, replays, refused batches, bad input,
Redis down. Every refusal must leave the queue and the replay guard untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.harness import Harness
from tests.http.helpers import LiveServer, queued_events, signed_headers
from worker.runtime import Runtime
from worker.settings import Settings


def _event(event_id: str, lead_id: str = "crm-1", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": event_id,
        "type": "lead.created",
        "lead": {"id": lead_id, "email": f"{lead_id}@example.com"},
    }
    doc.update(extra)
    return doc


def _post(live: LiveServer, rt: Runtime, body: bytes, **kwargs: Any) -> httpx.Response:
    headers = signed_headers(rt, body, **kwargs)
    return live.client.post("/events", content=body, headers=headers)


def test_single_object_is_queued(live: LiveServer, harness: Harness) -> None:
    response = _post(live, harness.rt, json.dumps(_event("e1")).encode())
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert queued_events(harness.rt) == 1


def test_array_and_json_lines_are_queued(live: LiveServer, harness: Harness) -> None:
    batch = json.dumps([_event("a1", "l1"), _event("a2", "l2")]).encode()
    assert _post(live, harness.rt, batch).json() == {"accepted": 2, "duplicates": 0}
    lines = b"\n".join(json.dumps(_event(f"j{i}", f"l{i}")).encode() for i in range(3)) + b"\n"
    response = _post(live, harness.rt, lines, content_type="application/x-ndjson")
    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "duplicates": 0}
    assert queued_events(harness.rt) == 5


def test_replayed_ids_are_reported_as_duplicates(live: LiveServer, harness: Harness) -> None:
    body = json.dumps([_event("d1"), _event("d2", "crm-2")]).encode()
    assert _post(live, harness.rt, body).json() == {"accepted": 2, "duplicates": 0}
    assert _post(live, harness.rt, body).json() == {"accepted": 0, "duplicates": 2}
    again = json.dumps([_event("d3"), _event("d3")]).encode()
    assert _post(live, harness.rt, again).json() == {"accepted": 1, "duplicates": 1}
    assert queued_events(harness.rt) == 3


def test_bad_batch_is_refused_whole_with_each_index(live: LiveServer, harness: Harness) -> None:
    good = _event("g1")
    bad_type = _event("g2", type="Lead Created")
    unknown_field = _event("g3", colour="blue")
    body = json.dumps([good, bad_type, unknown_field]).encode()
    response = _post(live, harness.rt, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"] == "invalid_events"
    assert [e["index"] for e in payload["errors"]] == [1, 2]
    assert "lowercase dotted name" in payload["errors"][0]["reason"]
    assert "unknown field" in payload["errors"][1]["reason"]
    assert queued_events(harness.rt) == 0
    # Nothing of the refused batch was remembered: the good event alone is new.
    assert _post(live, harness.rt, json.dumps(good).encode()).json()["accepted"] == 1


def test_unsendable_address_is_a_400_naming_the_reason(live: LiveServer, harness: Harness) -> None:
    # SendGrid sends no non-ASCII local part (docs/http.md "Addresses"): refused at the
    # door, so a 202 never turns into a dead letter at send time.
    doc = _event("u1")
    doc["lead"]["email"] = "jörg@exämple.de"
    response = _post(live, harness.rt, json.dumps(doc, ensure_ascii=False).encode())
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["index"] == 0
    assert error["reason"].startswith("lead.email: 'jörg@exämple.de' cannot be sent")
    assert "non-ASCII" in error["reason"]
    assert queued_events(harness.rt) == 0
    # The same person with an ASCII local part is accepted, the IDN domain in ASCII form.
    doc["lead"]["email"] = "jorg@exämple.de"
    response = _post(live, harness.rt, json.dumps(doc, ensure_ascii=False).encode())
    assert response.status_code == 202, response.text
    assert queued_events(harness.rt) == 1


def test_bad_line_of_json_lines_names_its_index(live: LiveServer, harness: Harness) -> None:
    body = json.dumps(_event("x1")).encode() + b"\n{not json}\n{also not}\n"
    response = _post(live, harness.rt, body, content_type="application/x-ndjson")
    assert response.status_code == 400
    errors = response.json()["errors"]
    # Every bad line is named, not only the first.
    assert [e["index"] for e in errors] == [1, 2]
    assert "line 2 is not valid JSON" in errors[0]["reason"]
    assert "line 3 is not valid JSON" in errors[1]["reason"]
    assert queued_events(harness.rt) == 0


def test_bad_input_gets_a_clear_4xx_and_nothing_is_queued(
    live: LiveServer, harness: Harness
) -> None:
    rt = harness.rt
    cases: list[tuple[bytes, dict[str, Any], int, str]] = [
        (b"{not json", {}, 400, "invalid_json"),
        (b"", {}, 400, "empty_body"),
        (b'{"id": "\xff\xfe"}', {}, 400, "invalid_utf8"),
        (b"[" * 40 + b"]" * 40, {}, 400, "too_deep"),
        (b"[" * 200_000, {}, 400, "too_deep"),
        (
            b'{"id": "n", "type": "lead.created", "lead": {"id": "x", "attributes": {"n": '
            + b"1" * 5000
            + b"}}}",
            {},
            400,
            "invalid_json",
        ),
        (
            json.dumps(_event("ct")).encode(),
            {"content_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            json.dumps(_event("ct")).encode(),
            {"content_type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (json.dumps(_event("old")).encode(), {"skew": -301}, 401, "signature_expired"),
        (json.dumps(_event("new")).encode(), {"skew": 301}, 401, "signature_expired"),
        (
            json.dumps(_event("wrong")).encode(),
            {"secrets": "not-the-secret"},
            401,
            "signature_mismatch",
        ),
        (b"42", {}, 400, "invalid_events"),
    ]
    for body, kwargs, status, code in cases:
        response = _post(live, rt, body, **kwargs)
        assert response.status_code == status, (body[:40], response.text)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == code, response.text
        assert response.json()["message"]
    assert queued_events(rt) == 0


def test_body_over_one_mebibyte_is_refused(live: LiveServer, harness: Harness) -> None:
    filler = "x" * (1024 * 1024)
    body = json.dumps(_event("big", data={"filler": filler})).encode()
    response = _post(live, harness.rt, body)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    # Without Content-Length (chunked), the limit is enforced while streaming.
    def chunks() -> Any:
        for _ in range(40):
            yield b" " * 65536

    headers = signed_headers(harness.rt, b"")
    response = live.client.post("/events", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert queued_events(harness.rt) == 0


def test_exactly_one_mebibyte_is_read(live: LiveServer, harness: Harness) -> None:
    doc = json.dumps(_event("edge")).encode()
    body = doc + b" " * (1024 * 1024 - len(doc))
    assert len(body) == 1024 * 1024
    assert _post(live, harness.rt, body).status_code == 202


def test_redis_unreachable_gives_503(
    make_settings: Callable[..., Settings], serve: Callable[[Runtime], LiveServer]
) -> None:
    runtime = Runtime(make_settings(redis_url="redis://127.0.0.1:9/0"), load_catalog=False)
    try:
        live = serve(runtime)
        response = _post(live, runtime, json.dumps(_event("down")).encode())
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert response.headers["retry-after"]
    finally:
        runtime.close()


def test_request_ids_go_in_and_out(live: LiveServer) -> None:
    response = live.client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = live.client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    # A hostile id (header injection, huge) is replaced, not echoed.
    response = live.client.get("/healthz", headers={"X-Request-Id": "a" * 500})
    assert response.headers["x-request-id"] != "a" * 500


def test_unknown_route_is_a_json_404(live: LiveServer) -> None:
    response = live.client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    response = live.client.get("/events")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
