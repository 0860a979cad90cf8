"""Steps that reach a person (issue 14, item 5), end to end on a real Redis with real
dramatiq worker threads: a ``notify:`` step emails the lead's owner exactly once, even
when the queue delivers its message twice; a ``webhook:`` step POSTs one signed JSON
to a real HTTP server on 127.0.0.1, tried again after a 503 and dead-lettered with the
reason after a 400. Both go through the send ledger like emails.

No harness here runs inline: the conftest marks these tests slow.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.harness import Harness, event, running
from tests.sendgrid_standin import SendGridStandIn
from worker.delivery import SendResult
from worker.enrollment import touch_id
from worker.errors import PermanentDeliveryError, TransientDeliveryError
from worker.http.metrics import StoreCollector
from worker.http.sendgrid_events import process_batch
from worker.leadview import lead_view, render_text
from worker.report import Filters, build_report
from worker.status import collect_status
from worker.webhooks import build_call, post

SECRET = "hook-secret"
OWNER = {"owner_name": "Maria Holm", "owner_email": "maria@acme.example"}
PING = """{% block subject %}Call {{ lead.first_name | default(lead.email) }} today{% endblock %}
{% block text %}
Hi {{ recipient.name | default("there") }},

{{ lead.first_name | default(lead.email) }} asked for a call ({{ lead.email }}).
{% endblock %}
"""


def worker_counters(h: Harness) -> dict[str, float]:
    """The global counters as ``nurture status --json`` shows them, checked to be what
    ``GET /metrics`` says (``nurture_worker_counter{name=...}``)."""
    counters: dict[str, float] = collect_status(h.rt)["counters"]
    registry = CollectorRegistry()
    registry.register(StoreCollector(h.rt))
    text = generate_latest(registry).decode()
    for name in ("sent", "notified", "posted"):
        assert f'nurture_worker_counter{{name="{name}"}} {counters[name]}' in text
    return counters


def only_sequence(dirs: dict[str, Path], text: str) -> None:
    """Leave just one sequence (and fit.yaml) in the copied catalog."""
    for path in dirs["sequences"].glob("*.yaml"):
        if path.name != "fit.yaml":
            path.unlink()
    (dirs["sequences"] / "ops.yaml").write_text(text, encoding="utf-8")
    (dirs["templates"] / "internal" / "ping.j2").write_text(PING, encoding="utf-8")


NOTIFY_SEQUENCE = """id: ops
trigger: lead.created
steps:
  - {id: hello, wait: 10m, template: value/guide}
  - id: ping
    wait: 1h
    notify: {template: internal/ping}
"""


def test_a_notify_step_reaches_the_owner_exactly_once(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    only_sequence(catalog_dirs, NOTIFY_SEQUENCE)
    # A 48 h cap: the notify an hour after the lead's email is not held back by it.
    h = make_harness(frequency_cap=48 * 3600.0)
    lead = {"first_name": "Ann", "source": "referral", **OWNER}
    with running(h):
        h.emit(event("e1", **lead))
        h.settle()
        h.advance(timedelta(minutes=10))
        assert h.sent() == [("lead-1", "ops", "hello")]
        # The notify falls due; the queue delivers its message twice, at once.
        h.clock.advance(timedelta(hours=1))
        claimed = h.rt.store.claim_due(h.clock.now().timestamp(), 10, lease=300)
        member = touch_id("ops", 1, "ping", "lead-1")
        assert [m for m, _ in claimed] == [member]
        batch = [[m, d] for m, d in claimed]
        h.rt.actors.send_touches.send(batch)
        h.rt.actors.send_touches.send(batch)
        h.settle()
        # ...and once more after it finished: the ledger and the enrollment say done.
        h.rt.actors.send_touches.send(batch)
        h.settle()
    notes = [m for m in h.messages() if m["X-Nurture-Internal"] == "notify"]
    assert len(notes) == 1
    note = notes[0]
    assert note["To"] == "Maria Holm <maria@acme.example>"
    assert note["Subject"] == "Call Ann today"
    assert note["List-Unsubscribe"] is None  # internal: no unsubscribe, no footer
    body = str(note.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert body.startswith("Hi Maria Holm,")
    assert "unsubscribe" not in body.lower()
    assert h.sent() == [("lead-1", "ops", "hello"), ("lead-1", "ops", "ping")]
    assert h.rt.store.ledger_state(member).startswith("sent:")
    # Not held back by the cap (sent when due), and the lead's last touch is the email.
    sent_at = float(h.rt.store.ledger_state(member).split(":", 1)[1])
    assert sent_at == pytest.approx(claimed[0][1], abs=5)
    stats = h.rt.store.stats()["ops"]
    assert stats["ping"].get("notified") == 1 and "sent" not in stats["ping"]
    # The lead's timeline and the report show it as a notify, not as an email sent.
    view = render_text(lead_view(h.rt.store, h.rt.catalog.current.catalog, "lead-1"))
    assert "NOTIFIED maria@acme.example ops/ping" in view.replace(" step ", "/")
    (row,) = build_report(h.rt.store, ["ops"], Filters())["sequences"]
    by_step = {s["step"]: s for s in row["steps"]}
    assert (by_step["hello"]["sent"], by_step["ping"]["sent"]) == (1, 0)
    assert by_step["ping"]["notified"] == 1
    # The global counters keep them apart too: `sent` is the emails to leads.
    counters = worker_counters(h)
    assert (counters["sent"], counters["notified"], counters["posted"]) == (1, 1, 0)
    assert h.dead_letters() == []


PING_DA = """{% block subject %}Ring til {{ lead.first_name | default(lead.email) }} i dag
{%- endblock %}
{% block text %}
Hej {{ recipient.name | default("der") }},

{{ lead.first_name | default(lead.email) }} bad om et opkald ({{ lead.email }}).
{% endblock %}
"""


def test_a_notify_goes_out_in_the_language_its_step_or_the_setting_picks(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    """Not the lead's language: the step's `locale`, else NURTURE_NOTIFY_LOCALE, else the
    default language (docs/sequences.md#steps-that-reach-a-person)."""
    only_sequence(
        catalog_dirs,
        "id: ops\ntrigger: lead.created\nsteps:\n"
        "  - {id: ping, wait: 0s, notify: {template: internal/ping}}\n"
        "  - {id: ping-en, wait: 1h, notify: {template: internal/ping, locale: en}}\n",
    )
    danish = catalog_dirs["templates"] / "da" / "internal" / "ping.j2"
    danish.parent.mkdir(parents=True)
    danish.write_text(PING_DA, encoding="utf-8")
    h = make_harness(notify_locale="da")
    with running(h):
        # A Finnish lead: the notify is for the Danish owner, not for the lead.
        h.emit(event("e1", first_name="Ann", locale="fi", **OWNER))
        h.settle()
        h.advance(timedelta(hours=1))
    assert h.sent() == [("lead-1", "ops", "ping"), ("lead-1", "ops", "ping-en")]
    subjects = [m["Subject"] for m in h.messages() if m["X-Nurture-Internal"] == "notify"]
    assert subjects == ["Ring til Ann i dag", "Call Ann today"]
    assert h.dead_letters() == []


class Receiver:
    """A real HTTP server on 127.0.0.1 answering POSTs with scripted statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append(
                    {"headers": dict(self.headers), "body": body, "status": status}
                )
                answer = b'{"error": "missing field task"}' if status == 400 else b"{}"
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("Retry-After", "1")
                if status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_for() -> Iterator[Callable[[list[int]], Receiver]]:
    made: list[Receiver] = []

    def make(statuses: list[int]) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def webhook_harness(
    make_harness: Callable[..., Harness], dirs: dict[str, Path], receiver: Receiver
) -> Harness:
    only_sequence(
        dirs,
        "id: ops\ntrigger: lead.created\nsteps:\n"
        "  - id: crm-task\n    wait: 0s\n    webhook: {target: crm-tasks}\n"
        "  - {id: hello, wait: 1d, template: value/guide}\n",
    )
    return make_harness(webhook_secret=SECRET, webhook_targets={"crm-tasks": receiver.url})


def test_a_webhook_posts_one_signed_json_even_after_a_503(
    make_harness: Callable[..., Harness],
    catalog_dirs: dict[str, Path],
    receiver_for: Callable[[list[int]], Receiver],
) -> None:
    receiver = receiver_for([503])
    h = webhook_harness(make_harness, catalog_dirs, receiver)
    member = touch_id("ops", 1, "crm-task", "lead-1")
    with running(h):
        h.emit(event("e1", first_name="Ann", **OWNER))
        h.settle()
        # The 503 asked for a second's wait: the touch is back on the schedule.
        assert [r["status"] for r in receiver.requests] == [503]
        h.run_until(h.clock.now().timestamp() + 60)
        # Delivered again: nothing more is posted.
        h.rt.actors.send_touches.send([[member, h.clock.now().timestamp()]])
        h.settle()
    assert [r["status"] for r in receiver.requests] == [503, 200]
    accepted = receiver.requests[1]
    headers, body = accepted["headers"], accepted["body"]
    # The signature is HMAC-SHA256 over the raw body (docs/sequences.md#webhook).
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Nurture-Signature"] == expected
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    key = "ops.1.crm-task.lead-1"
    # One key for every attempt of the touch: the receiver can drop repeats.
    assert headers["Idempotency-Key"] == payload["id"] == key
    assert receiver.requests[0]["headers"]["Idempotency-Key"] == key
    assert payload["type"] == "nurture.webhook"
    assert (payload["sequence"], payload["step"], payload["generation"]) == ("ops", "crm-task", 1)
    assert payload["lead"]["owner_email"] == "maria@acme.example"
    assert payload["lead"]["email"] == "ann@example.com"
    assert payload["trigger"]["type"] == "lead.created"
    assert h.rt.store.ledger_state(member).startswith("sent:")
    stats = h.rt.store.stats()["ops"]["crm-task"]
    assert stats.get("posted") == 1 and stats.get("retried") == 1 and "sent" not in stats
    view = render_text(lead_view(h.rt.store, h.rt.catalog.current.catalog, "lead-1"))
    assert f"to {receiver.url}: HTTP 200" in view
    (row,) = build_report(h.rt.store, ["ops"], Filters())["sequences"]
    (step,) = [s for s in row["steps"] if s["step"] == "crm-task"]
    assert (step["posted"], step["sent"]) == (1, 0)
    counters = worker_counters(h)
    assert (counters["sent"], counters["notified"], counters["posted"]) == (0, 0, 1)
    assert h.dead_letters() == []


def test_a_webhook_refused_with_400_is_a_dead_letter_with_the_reason(
    make_harness: Callable[..., Harness],
    catalog_dirs: dict[str, Path],
    receiver_for: Callable[[list[int]], Receiver],
) -> None:
    receiver = receiver_for([400])
    h = webhook_harness(make_harness, catalog_dirs, receiver)
    member = touch_id("ops", 1, "crm-task", "lead-1")
    with running(h):
        h.emit(event("e1", first_name="Ann"))
        h.settle()
        h.run_until(h.clock.now().timestamp() + 3600)
        assert [r["status"] for r in receiver.requests] == [400]  # never tried again
        # The sequence goes on: the next step is the lead's email, a day later.
        h.run_until(h.clock.now().timestamp() + 2 * 86400)
    assert h.sent() == [("lead-1", "ops", "hello")]
    (letter,) = h.dead_letters()
    assert letter["payload"]["touch"] == member
    assert "HTTP 400" in letter["reason"] and "missing field task" in letter["reason"]
    assert h.rt.store.ledger_state(member).startswith("dead:")
    assert h.rt.store.stats()["ops"]["crm-task"].get("failed") == 1


def test_a_notify_through_sendgrid_carries_no_unsubscribe_and_none_of_the_lead(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    only_sequence(catalog_dirs, NOTIFY_SEQUENCE)
    with SendGridStandIn() as sendgrid:
        h = make_harness(
            delivery="sendgrid", sendgrid_host=sendgrid.url, sendgrid_api_key=sendgrid.api_key
        )
        with running(h):
            h.emit(event("e1", first_name="Ann", **OWNER))
            h.run_until(h.clock.now().timestamp() + 2 * 3600)
        lead_email, note = sendgrid.messages
    assert lead_email.to == ["ann@example.com"] and "List-Unsubscribe" in lead_email.headers
    assert note.to == ["maria@acme.example"]
    assert note.headers == {}  # no List-Unsubscribe: it is not marketing to the lead
    assert note.custom_args == {"internal": "notify"}  # no lead, sequence or step
    tracking = note.payload["tracking_settings"]
    assert not tracking["open_tracking"]["enable"] and not tracking["click_tracking"]["enable"]
    # The Event Webhook echoes custom_args as top-level fields of each event
    # (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event):
    # a bounce of the owner's address suppresses no lead and counts for no sequence.
    bounce = {
        "email": "maria@acme.example",
        "event": "bounce",
        "type": "bounce",
        "sg_event_id": "b-1",
        "timestamp": 1700000000,
        "internal": "notify",
    }
    process_batch(h.rt, [bounce])
    assert h.rt.store.suppressions.reason("maria@acme.example") is None
    assert h.rt.store.enrollment("lead-1", "ops") is not None
    assert "bounced" not in h.rt.store.stats()["ops"].get("ping", {})


def test_post_classifies_each_answer_of_a_real_server(
    receiver_for: Callable[[list[int]], Receiver],
) -> None:
    """What each answer means (worker/webhooks.py): 2xx sent; 408, 429 and 5xx again
    later (Retry-After honoured); other answers, redirects included, refused for good."""
    receiver = receiver_for([200, 429, 408, 502, 302, 404])
    call = build_call("k-1", receiver.url, SECRET, {"step": "s"})
    results = [post(call, timeout=5) for _ in range(6)]
    assert isinstance(results[0], SendResult) and results[0].provider_id == "HTTP 200"
    assert [type(r) for r in results[1:4]] == [TransientDeliveryError] * 3
    assert results[1].retry_after == 1  # type: ignore[union-attr]
    assert [type(r) for r in results[4:]] == [PermanentDeliveryError] * 2
    assert "HTTP 302" in str(results[4])
    # The redirect was not followed: six requests, all to the configured URL.
    assert len(receiver.requests) == 6
    receiver.close()
    refused = post(call, timeout=5)  # nobody listens any more
    assert isinstance(refused, TransientDeliveryError)
