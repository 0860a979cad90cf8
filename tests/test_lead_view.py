"""``nurture lead``: every send and every non-send of a lead is explained by its timeline.

The example leads (examples/events.jsonl) run through the domain harness for six weeks;
then, for each lead, every email in the outbox is a ``sent`` entry of its timeline, every
step passed without an email has a recorded reason, and every sequence the lead is not
in has a reason.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.harness import Harness, event, running
from worker.events import parse_events
from worker.http.sendgrid_events import process_batch
from worker.leadview import find_leads, lead_view, render_text
from worker.store.timeline import TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS

INLINE_QUEUE = True

#: The fallback of ``why_not`` when nothing recorded explains a missing enrollment.
UNEXPLAINED = "was seen before this sequence existed"


def _examples(h: Harness) -> list[str]:
    events, errors = parse_events((ROOT / "examples" / "events.jsonl").read_bytes())
    assert errors == []
    h.emit(*events)
    return sorted({e.lead.id for e in events})


def test_every_send_and_non_send_of_the_example_leads_is_explained(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        leads = _examples(h)
        h.run_until(h.clock.now().timestamp() + 42 * 86400)
    catalog = h.rt.catalog.current.catalog
    sent = Counter(h.sent())
    assert sent, "the examples send emails"
    for lead_id in leads:
        view = lead_view(h.rt.store, catalog, lead_id)
        timeline = view["timeline"]
        assert timeline[0]["kind"] == "event"
        recorded = Counter(
            (lead_id, e["sequence"], e["step"])
            for e in timeline
            # notify steps' internal emails are in the outbox too, recorded as notified
            if e["kind"] == "touch" and e["outcome"] in ("sent", "notified")
        )
        assert recorded == Counter({k: n for k, n in sent.items() if k[0] == lead_id})
        for entry in timeline:
            if entry["kind"] == "touch" and entry["outcome"] in ("sent", "notified"):
                assert entry["provider"] == "outbox" and entry["provider_id"].startswith("<")
        # Every step passed without an email says why.
        for sequence_id, enrollment in view["enrollments"].items():
            for step in enrollment["done"]:
                if (lead_id, sequence_id, step) in sent:
                    continue
                reasons = [
                    e
                    for e in timeline
                    if e.get("sequence") == sequence_id
                    and e.get("step") == step
                    and e["kind"] in ("skip", "touch")
                ]
                assert reasons, f"{lead_id} {sequence_id}/{step} passed with no reason recorded"
            if enrollment["state"] == "exited":
                assert enrollment["reason"]
                assert any(e["kind"] == "exited" and e["sequence"] == sequence_id for e in timeline)
        # Every sequence the lead is not in says why, from what was recorded.
        assert set(view["not_in"]) | {
            s for s, e in view["enrollments"].items() if e["state"] == "active"
        } == set(catalog.sequences)
        for sequence_id, why in view["not_in"].items():
            assert why and UNEXPLAINED not in why, (lead_id, sequence_id, why)
        text = render_text(view)
        for e in timeline:
            if e["kind"] == "touch" and e["outcome"] in ("sent", "notified"):
                said = "SENT" if e["outcome"] == "sent" else f"NOTIFIED {e['to']}"
                assert f"{said} {e['sequence']}/{e['step']}" in text
        json.dumps(view)  # --json output


def test_window_skip_condition_and_trigger_condition_are_named(
    make_harness: Callable[..., Harness], catalog_dirs: dict[str, Path]
) -> None:
    (catalog_dirs["sequences"] / "saas-only.yaml").write_text(
        "id: saas-only\n"
        "description: a step only for SaaS leads\n"
        "trigger:\n"
        "  event: lead.created\n"
        "  when: {attributes.budget: {gte: 1000}}\n"
        "send_window: {days: mon-fri, hours: '09:00-16:00'}\n"
        "steps:\n"
        "  - id: saas\n"
        "    wait: 0s\n"
        "    template: outbound/intro\n"
        "    when: {attributes.industry: saas}\n"
        "  - id: everyone\n"
        "    wait: 1 day\n"
        "    template: outbound/intro\n",
        encoding="utf-8",
    )
    h = make_harness()
    h.clock.advance(timedelta(hours=10))  # Monday 19:00 UTC: outside the window
    with running(h):
        h.emit(event("e1", lead_id="rich", email="rich@example.com", attributes={"budget": 2000}))
        h.emit(event("e2", lead_id="poor", email="poor@example.com", attributes={"budget": 700}))
        saas = {"budget": 5000, "industry": "saas"}
        h.emit(event("e3", lead_id="saas", email="saas@example.com", attributes=saas))
        h.settle()
        # The workers were down until Tuesday 20:00 UTC: the first touches fell due at
        # 09:00 and the window has closed again by the time they are looked at.
        h.clock.advance(timedelta(hours=25))
        h.run_until(h.clock.now().timestamp() + 3 * 86400)
    catalog = h.rt.catalog.current.catalog
    rich = lead_view(h.rt.store, catalog, "rich")
    skips = [e for e in rich["timeline"] if e["kind"] == "skip"]
    assert (skips[0]["reason"], skips[0]["step"]) == ("condition", "saas")
    assert skips[0]["detail"] == "when: attributes.industry is 'saas' (is missing)"
    text = render_text(rich)
    assert "NOT SENT saas-only/saas: skipped: the step's condition is false" in text
    assert "SENT saas-only/everyone" in text
    waited = lead_view(h.rt.store, catalog, "saas")
    window = [e for e in waited["timeline"] if e["kind"] == "skip" and e["sequence"] == "saas-only"]
    assert [(e["reason"], e["step"]) for e in window] == [("send window", "saas")]
    assert "NOT SENT saas-only/saas: waiting: outside the send window until" in render_text(waited)
    assert "SENT saas-only/saas" in render_text(waited)
    poor = lead_view(h.rt.store, catalog, "poor")
    assert poor["not_in"]["saas-only"] == ("not enrolled: when: attributes.budget >= 1000 (is 700)")
    assert find_leads(h.rt.store, "POOR@example.com") == ["poor"]


def test_disqualification_decline_field_changes_and_sendgrid_reports(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    with running(h):
        h.emit(event("e1", lead_id="dana", email="dana@example.com", source="website"))
        h.advance(timedelta(minutes=10))
        h.emit(event("e2", "lead.updated", lead_id="dana", email=None, attributes={"budget": 100}))
        h.run_until(h.clock.now().timestamp() + 2 * 86400)
    # SendGrid's Event Webhook reports on the first email (field names from
    # https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event).
    first = next(e for e in h.rt.store.timeline.read("dana") if e["kind"] == "touch")
    batch = [
        {
            "email": "dana@example.com",
            "timestamp": 1795430000,
            "event": name,
            "sg_event_id": f"sg-{name}",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            "lead_id": "dana",
            "sequence": first["sequence"],
            "step": first["step"],
        }
        for name in ("delivered", "open")
    ]
    result = process_batch(h.rt, batch)
    assert result.processed == 2
    assert process_batch(h.rt, batch).duplicates == 2  # a replay adds nothing
    view = lead_view(h.rt.store, h.rt.catalog.current.catalog, "dana")
    kinds = [e["kind"] for e in view["timeline"]]
    assert "disqualified" in kinds and "decline" in kinds and "exited" in kinds
    changes = [e for e in view["timeline"] if e["kind"] == "fields"]
    assert changes[-1]["changed"] == {"attributes.budget": [None, 100]}
    reports = [e for e in view["timeline"] if e["kind"] == "provider"]
    assert [r["event"] for r in reports] == ["delivered", "open"]
    assert view["not_in"]["value-first"].startswith("exited: disqualified")
    text = render_text(view)
    assert "SendGrid reported open for" in text
    assert "DISQUALIFIED" in text


def test_timeline_is_capped_and_expires(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    with running(h):
        for n in range(TIMELINE_MAXLEN + 20):
            h.emit(event(f"u{n}", "lead.updated", lead_id="busy", attributes={"n": n}))
            h.settle()  # in order: each update changes n by one
        h.settle()
    key = h.rt.store.keys.timeline("busy")
    assert h.rt.store.redis.llen(key) == TIMELINE_MAXLEN
    ttl = h.rt.store.redis.ttl(key)
    assert TIMELINE_TTL_SECONDS - 60 < ttl <= TIMELINE_TTL_SECONDS
    # The newest entries are kept.
    last = h.rt.store.timeline.read("busy")[-1]
    assert last["kind"] == "fields"
    assert last["changed"] == {"attributes.n": [TIMELINE_MAXLEN + 18, TIMELINE_MAXLEN + 19]}


@pytest.mark.slow  # starts the CLI or worker processes
@pytest.mark.parametrize("as_json", [False, True])
def test_cli_lead_command(
    make_harness: Callable[..., Harness],
    make_settings: Callable[..., object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    from worker import cli

    h = make_harness()
    with running(h):
        _examples(h)
        h.advance(timedelta(hours=1))
    settings = h.rt.settings
    for name, value in {
        "NURTURE_REDIS_URL": settings.redis_url,
        "NURTURE_SEQUENCES_DIR": settings.sequences_dir,
        "NURTURE_TEMPLATES_DIR": settings.templates_dir,
        "NURTURE_CONTENT_DIR": settings.content_dir,
    }.items():
        monkeypatch.setenv(name, str(value))
    assert cli.main(["lead", "ann@example.com", *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    if as_json:
        assert json.loads(out)["id"] == "demo-ann"
    else:
        assert out.startswith("lead demo-ann\n") and "timeline:" in out and "not in:" in out
    assert cli.main(["lead", "nobody"]) == 1
    assert "no lead 'nobody' is stored" in capsys.readouterr().err


@pytest.mark.slow  # starts the CLI or worker processes
def test_cli_report_command(
    make_harness: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from worker import cli

    h = make_harness()
    with running(h):
        _examples(h)
        # Applied at 09:00, not after the jump (their touches would be an hour overdue
        # when enrolled, and the catch-up spreads those over the next hour).
        h.settle()
        h.advance(timedelta(hours=1))
    settings = h.rt.settings
    for name, value in {
        "NURTURE_REDIS_URL": settings.redis_url,
        "NURTURE_SEQUENCES_DIR": settings.sequences_dir,
        "NURTURE_TEMPLATES_DIR": settings.templates_dir,
        "NURTURE_CONTENT_DIR": settings.content_dir,
    }.items():
        monkeypatch.setenv(name, str(value))
    page = tmp_path / "r.html"
    assert cli.main(["report", "--format", "json", "--html", str(page)]) == 0
    data = json.loads(capsys.readouterr().out)
    sent = sum(e["total"]["sent"] for e in data["sequences"])
    notified = sum(e["total"]["notified"] for e in data["sequences"])
    # The outbox holds the leads' emails and the owner's notify email (referral-intro's
    # find-out for Mikko), which the report counts apart as notified.
    assert sent > 0 and notified == 1
    assert sent + notified == len(h.sent())
    assert "<svg" in page.read_text(encoding="utf-8")
    assert cli.main(["report", "--by", "source"]) == 0
    assert "opened*" in capsys.readouterr().out
    assert cli.main(["report", "--since", "yesterday"]) == 1
    assert "--since 'yesterday' is not an ISO date" in capsys.readouterr().err
