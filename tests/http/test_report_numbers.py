"""``nurture report``: exact numbers for 1,000 leads and their SendGrid events, from the
per-day counters and from the timelines (``--exact``), checked against the per-lead
records; the HTML page looked at in a real (headless) Chromium.

SendGrid's events are the Event Webhook's JSON (fields and event names from
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event), posted
signed (ECDSA, as the Signed Event Webhook does) to ``POST /webhooks/sendgrid``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.browser import read_png, run_chromium
from tests.harness import Harness, event, running
from tests.http.helpers import LiveServer, SendgridSigner
from worker import report
from worker.errors import SettingsError
from worker.runtime import Runtime

INLINE_QUEUE = True
LEADS = 1000
LOCALES = ("en", "da", "fi")


@pytest.fixture
def world(
    make_harness: Callable[..., Harness],
    serve: Callable[[Runtime], LiveServer],
    sendgrid_signer: SendgridSigner,
) -> tuple[Harness, dict[str, Any]]:
    """1,000 leads through their first touches, with SendGrid's reports and the leads'
    replies, meetings, deals and disqualifications; and what was done, to check against."""
    rng = random.Random(12)
    h = make_harness(sendgrid_webhook_public_key=sendgrid_signer.public_key)
    live = serve(h.rt)
    with running(h):
        h.emit(
            *[
                event(
                    f"c{n}",
                    lead_id=f"L{n}",
                    email=f"l{n}@example.com",
                    source="outbound" if n % 4 == 0 else "website",
                    locale=LOCALES[n % 3],
                    timezone="Europe/Copenhagen",
                    attributes={"industry": "saas", "budget": 5000},
                )
                for n in range(LEADS)
            ]
        )
        h.settle(timeout=600)
        h.clock.advance(timedelta(minutes=15))
        h.settle(timeout=600)
    sent_messages = h.messages()
    reports: list[dict[str, Any]] = []
    next_day = int((h.clock.now() + timedelta(days=1)).timestamp())  # reports a day later
    for index, message in enumerate(sent_messages):
        base = {
            "email": message["To"].addresses[0].addr_spec,
            "timestamp": next_day + index,
            "sg_message_id": f"14c5d75ce93.dfd.64b469.filter0001.{index}.0",
            "smtp-id": f"<14c5d75ce93.dfd.64b469.{index}@ismtpd-555>",
            "lead_id": message["X-Nurture-Lead"],
            "sequence": message["X-Nurture-Sequence"],
            "step": message["X-Nurture-Step"],
        }
        roll = rng.random()
        if roll < 0.03:
            names = [("bounce", {"type": "bounce", "reason": "550 5.1.1 unknown user"})]
        else:
            names = [("delivered", {"response": "250 OK"})]
            if roll < 0.6:
                names += [("open", {"useragent": "Mozilla/5.0", "sg_machine_open": False})] * (
                    1 + int(roll * 10) % 2  # some opened twice: still one "opened"
                )
            if roll < 0.25:
                names.append(("click", {"url": "https://nurture.example/case"}))
            if 0.95 < roll < 0.96:
                names.append(("spamreport", {}))
            elif 0.96 < roll < 0.98:
                names.append(("unsubscribe", {}))
        for number, (name, extra) in enumerate(names):
            reports.append(
                {**base, "event": name, "sg_event_id": f"ev-{index}-{number}-{name}", **extra}
            )
    for start in range(0, len(reports), 500):  # SendGrid batches its POSTs
        body = json.dumps(reports[start : start + 500]).encode()
        response = live.client.post(
            "/webhooks/sendgrid", content=body, headers=sendgrid_signer.headers(body)
        )
        assert response.status_code == 200, response.text
    ends = {"lead.replied": range(0, LEADS, 17), "meeting.booked": range(3, LEADS, 29)}
    ends["deal.won"] = range(5, LEADS, 41)
    ends["lead.disqualified"] = range(7, LEADS, 37)
    with running(h):
        h.clock.advance(timedelta(hours=2))
        h.settle(timeout=600)
        for type_, leads in ends.items():
            h.emit(*[event(f"{type_}-{n}", type_, lead_id=f"L{n}", email=None) for n in leads])
        h.settle(timeout=600)
    return h, {"messages": sent_messages, "reports": reports}


def _expected(h: Harness, done: dict[str, Any]) -> dict[tuple[str, str], Counter[str]]:
    """The funnel from the per-lead records: the outbox, the posted reports, the leads'
    enrollments and send ledgers; computed without the timeline."""
    store = h.rt.store
    out: dict[tuple[str, str], Counter[str]] = {}

    def add(sequence: str, step: str, column: str) -> None:
        out.setdefault((sequence, step), Counter())[column] += 1

    for message in done["messages"]:
        add(message["X-Nurture-Sequence"], message["X-Nurture-Step"], "sent")
    per_touch: set[tuple[str, str, str, str]] = set()
    names = {"delivered": "delivered", "open": "opened", "click": "clicked"}
    names |= {"bounce": "bounced", "spamreport": "spam"}
    for item in done["reports"]:
        column = names.get(item["event"])
        key = (item["lead_id"], item["sequence"], item["step"], str(column))
        if column and key not in per_touch:
            per_touch.add(key)
            add(item["sequence"], item["step"], column)
    exits = {"exit_on:lead.replied": "replied", "exit_on:meeting.booked": "meetings"}
    exits |= {"exit_on:deal.won": "won", "disqualified": "declined"}
    exits |= {"unsubscribe": "unsubscribed", "spamreport": "unsubscribed"}
    for n in range(LEADS):
        lead_id = f"L{n}"
        ledger = store.ledger.entries(lead_id)
        for sequence, enrollment in store.enrollments(lead_id).items():
            add(
                sequence, enrollment.done[0] if enrollment.done else _first(h, sequence), "enrolled"
            )
            column = exits.get(enrollment.reason or "")
            if enrollment.state == "exited" and column:
                sent = sorted(
                    (float(state.split(":", 1)[1]), field.split(":", 2)[2])
                    for field, state in ledger.items()
                    if field.startswith(sequence + ":") and state.startswith("sent:")
                )
                add(sequence, sent[-1][1] if sent else "-", column)
    return out


def _cells(data: dict[str, Any]) -> dict[tuple[str, str], Counter[str]]:
    """(sequence, step) -> its non-zero counts."""
    got: dict[tuple[str, str], Counter[str]] = {}
    for entry in data["sequences"]:
        for row in entry["steps"]:
            got[(entry["sequence"], row["step"])] = Counter(
                {c: row[c] for c in report.COLUMNS if row[c]}
            )
    return got


def _first(h: Harness, sequence: str) -> str:
    return h.rt.catalog.current.catalog.sequences[sequence].steps[0].id


def test_report_numbers_equal_the_per_lead_records(
    world: tuple[Harness, dict[str, Any]], tmp_path: Path
) -> None:
    h, done = world
    assert len(done["messages"]) >= LEADS  # every lead got its first email (some two)
    order = sorted(h.rt.catalog.current.catalog.sequences)
    expected = {key: counts for key, counts in _expected(h, done).items() if counts}
    # The per-day counters and the leads' timelines (--exact) both equal the records.
    data = report.build_report(h.rt.store, order, report.Filters())
    got = _cells(data)
    assert got == expected
    exact = report.build_exact(h.rt.store, order, report.Filters())
    assert _cells(exact) == expected
    assert data == exact
    for by in ("locale", "source"):
        filters = report.Filters(by=by)
        by_counters = report.build_report(h.rt.store, order, filters)
        assert by_counters == report.build_exact(h.rt.store, order, filters)
    totals = Counter[str]()
    for counts in got.values():
        totals.update(counts)
    # Every column of the emails is exercised by this run (notify and webhook steps'
    # `notified` and `posted` by tests/test_reach.py).
    emails = set(report.COLUMNS) - {"notified", "posted"}
    assert emails <= {c for c, v in totals.items() if v}, totals
    # Rates are the counts' ratios.
    for entry in data["sequences"]:
        total = entry["total"]
        if total["sent"]:
            assert total["delivered_rate"] == round(total["delivered"] / total["sent"], 4)
    # --by locale: the groups add up to the whole.
    by_locale = report.build_report(h.rt.store, order, report.Filters(by="locale"))
    assert {e["group"] for e in by_locale["sequences"]} == set(LOCALES)
    summed = Counter[str]()
    for entry in by_locale["sequences"]:
        summed.update({c: entry["total"][c] for c in report.COLUMNS})
    assert +summed == +totals
    # --until between the two rounds of sends (outbound-intro at once, the others at
    # 10 minutes): every enrollment but the declines, and the first round only.
    first_send = h.clock.now() - timedelta(hours=2, minutes=5)
    store = h.rt.store
    first_round = sum(
        1
        for n in range(LEADS)
        for state in store.ledger.entries(f"L{n}").values()
        if state.startswith("sent:") and float(state[5:]) < first_send.timestamp()
    )
    early = report.build_exact(h.rt.store, order, report.Filters(until=first_send.timestamp()))
    declines = {s.id for s in h.rt.catalog.current.catalog.decline_sequences}
    later = sum(e["total"]["enrolled"] for e in data["sequences"] if e["sequence"] in declines)
    assert later > 0  # the disqualified leads' declines start after the sends
    assert sum(e["total"]["enrolled"] for e in early["sequences"]) == totals["enrolled"] - later
    assert sum(e["total"]["sent"] for e in early["sequences"]) == first_round > 0
    # Whole days from the counters: the same as the timelines over those days.
    sends_day = datetime.combine(first_send.date(), datetime.min.time(), UTC)
    for since, until in (
        (sends_day, sends_day + timedelta(days=1)),
        (sends_day + timedelta(days=1), None),
        (None, sends_day),
    ):
        days = report.Filters(
            since=since.timestamp() if since else None, until=until.timestamp() if until else None
        )
        in_days = report.build_report(h.rt.store, order, days)
        assert in_days == report.build_exact(h.rt.store, order, days)
        sums = Counter[str]()
        for entry in in_days["sequences"]:
            sums.update({c: entry["total"][c] for c in report.COLUMNS})
        # SendGrid's reports are a day after the sends.
        assert bool(sums["sent"]) == (since == sends_day), (since, sums)
        assert bool(sums["delivered"]) == (since == sends_day + timedelta(days=1)), (since, sums)
    with pytest.raises(SettingsError, match="whole UTC days"):
        report.build_report(h.rt.store, order, report.Filters(until=first_send.timestamp()))
    # --sequence
    only = report.build_report(h.rt.store, order, report.Filters(sequence="outbound-intro"))
    assert [e["sequence"] for e in only["sequences"]] == ["outbound-intro"]
    # CSV and table carry the same numbers.
    rows = list(csv.DictReader(io.StringIO(report.render_csv(data))))
    assert sum(int(r["sent"]) for r in rows if r["step"] == "TOTAL") == totals["sent"]
    assert "opened*" in report.render_table(data) and "mail privacy" in report.render_table(data)
    # The HTML page, in a real browser (building the 1,000 leads once serves both).
    look_in_browser(data, tmp_path)


def look_in_browser(data: dict[str, Any], tmp_path: Path) -> None:
    """Headless Chromium: the DOM has a funnel per sequence; the screenshot is not blank."""
    page = tmp_path / "report.html"
    page.write_text(report.render_html(data), encoding="utf-8")
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html
    dom = run_chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for entry in data["sequences"]:
        assert f'aria-label="{entry["sequence"]} funnel"' in dom.stdout
        sent = entry["total"]["sent"]
        assert f'data-stage="sent" data-value="{sent}"' in dom.stdout
    shot = tmp_path / "report.png"
    result = run_chromium(
        page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1000,1400"
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    colours = {pixel[:3] for row in read_png(shot.read_bytes()) for pixel in row[::7]}
    assert (0x2F, 0x6F, 0xB0) in colours  # the funnel's bars are drawn
    assert len(colours) > 10  # text and bars, not a blank page


def test_report_times_are_iso() -> None:
    """--since / --until as the CLI reads them (UTC when no offset)."""
    from worker.cli import _day

    assert _day("2026-11-23", "--since") == datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    assert _day(None, "--since") is None
