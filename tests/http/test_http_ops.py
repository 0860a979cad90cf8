"""/healthz, /readyz, /metrics, JSON logs with request ids, the OpenAPI document."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pytest

from tests.harness import Harness
from tests.http.helpers import LiveServer, signed_headers
from worker.enrollment import touch_id
from worker.logs import JsonFormatter
from worker.runtime import Runtime


def _wait_for_records(
    caplog: pytest.LogCaptureFixture, match: Callable[[logging.LogRecord], bool]
) -> list[logging.LogRecord]:
    """Records matching ``match``; the access line is logged just after the response
    went out, so the client may see the answer a moment before the line exists."""
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in caplog.records if match(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (
            line.startswith(name + "{") and line.split(" ")[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_health_and_readiness(live: LiveServer) -> None:
    assert live.client.get("/healthz").json() == {"status": "ok"}
    assert live.client.get("/readyz").json() == {"status": "ready"}


def test_readiness_fails_without_redis_liveness_does_not(
    make_harness: Callable[..., Harness], serve: Callable[[Runtime], LiveServer]
) -> None:
    harness = make_harness(redis_url="redis://127.0.0.1:9/0")
    live = serve(harness.rt)
    assert live.client.get("/healthz").status_code == 200
    response = live.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    # Metrics keep answering and say Redis is down.
    metrics = live.client.get("/metrics")
    assert metrics.status_code == 200
    assert _metric(metrics.text, "nurture_redis_up") == 0


def test_metrics_report_http_and_redis_side_figures(live: LiveServer, harness: Harness) -> None:
    store = harness.rt.store
    store.count("value-first", "outcome-story", "sent", 3)
    store.count("value-first", "outcome-story", "failed")
    store.count("decline", "polite-no", "sent")
    overdue = touch_id("value-first", 1, "outcome-story", "l")
    store.redis.zadd(
        store.keys.schedule(store.keys.bucket("l")), {overdue: harness.clock.now().timestamp() - 30}
    )
    store.counters.set_global("scheduler_lag_last", 1.5)
    body = b'{"id":"m1","type":"lead.created","lead":{"id":"l","email":"l@example.com"}}'
    live.client.post("/events", content=body, headers=signed_headers(harness.rt, body))
    live.client.post("/events", content=b"{}", headers={"Content-Type": "application/json"})

    response = live.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'nurture_events_accepted_total{source="native"} 1.0' in text
    assert 'nurture_events_refused_total{reason="signature_missing",source="native"} 1.0' in text
    assert (
        'nurture_touches_total{outcome="sent",sequence="value-first",step="outcome-story"} 3.0'
        in text
    )
    assert (
        'nurture_touches_total{outcome="failed",sequence="value-first",step="outcome-story"} 1.0'
        in text
    )
    assert 'nurture_queue_messages{queue="events",state="ready"} 1.0' in text
    assert _metric(text, "nurture_scheduled_touches") == 1
    assert _metric(text, "nurture_schedule_overdue_seconds") == pytest.approx(30, abs=1)
    assert _metric(text, "nurture_scheduler_lag_seconds") == 1.5
    assert _metric(text, "nurture_redis_up") == 1
    assert 'nurture_http_requests_total{method="POST",route="/events",status="202"} 1.0' in text


def test_logs_carry_the_request_id(live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.http")
    live.client.get("/healthz", headers={"X-Request-Id": "req-42"})
    records = _wait_for_records(caplog, lambda r: getattr(r, "route", None) == "/healthz")
    assert records
    line = json.loads(JsonFormatter().format(records[-1]))
    assert line["request_id"] == "req-42"
    assert line["status"] == 200
    assert line["route"] == "/healthz"


def test_logs_never_contain_unsubscribe_tokens(
    live: LiveServer, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.rt.store.save_lead("l9", {"id": "l9", "email": "l9@example.com"}, None)
    url = harness.rt.unsubscribe_url("l9")
    token = url.rsplit("/", 1)[1]
    caplog.set_level(logging.INFO)
    live.client.get(url.removeprefix(harness.rt.settings.public_url))
    # Our own log lines name the route template; uvicorn's access log (which prints raw
    # paths) should be turned off by `nurture serve`.
    ours = _wait_for_records(
        caplog, lambda r: r.name.startswith("worker") and "/unsubscribe" in r.getMessage()
    )
    assert ours
    ours = [r for r in caplog.records if r.name.startswith("worker")]
    assert all(token not in r.getMessage() for r in ours)
    assert any("/unsubscribe/{token}" in r.getMessage() for r in ours)


def test_openapi_document_is_published(live: LiveServer) -> None:
    doc = live.client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/events",
        "/events/hubspot",
        "/events/pipedrive",
        "/webhooks/sendgrid",
        "/unsubscribe/{token}",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths
    events = paths["/events"]["post"]
    assert set(events["responses"]) >= {"202", "400", "401", "413", "415", "503"}
    assert "Event" in doc["components"]["schemas"]
    assert "Lead" in doc["components"]["schemas"]
