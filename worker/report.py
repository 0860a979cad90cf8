"""``nurture report``: the funnel per sequence and step.

By default from the per-day counters in the sequences' stats hashes
(``worker/store/counters.py``), written in the same atomic step as each fact they
count: a few hash reads whatever the number of leads, whole UTC days only.
``--exact`` (:func:`build_exact`) counts the per-lead records instead (every timeline,
a SCAN), so its numbers equal what ``nurture lead`` shows lead by lead, for any time
range, as far as the timelines still reach back; the two agree (tests/http/test_report_numbers.py).

Attribution: an outcome that ends an enrollment (a reply, a meeting booked, a deal won,
an unsubscribe, a disqualification) counts for the sequence it ended and for the step
last *sent* in it before then (``-`` when nothing had been sent yet). SendGrid's reports
count once per touch (a second open of the same email is not a second "opened").
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from html import escape
from typing import Any

from worker.errors import SettingsError
from worker.store import Store

#: The funnel's columns, in order.
COLUMNS = (
    "enrolled",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "replied",
    "meetings",
    "won",
    "unsubscribed",
    "bounced",
    "spam",
    "declined",
    "notified",
    "posted",
)
#: Column -> the column its rate is taken of.
RATE_OF = {
    "delivered": "sent",
    "opened": "delivered",
    "clicked": "delivered",
    "replied": "sent",
    "meetings": "sent",
    "won": "sent",
    "unsubscribed": "sent",
    "bounced": "sent",
    "spam": "delivered",
    "declined": "enrolled",
}
OPENS_NOTE = (
    "opened is inflated by mail privacy features (Apple Mail Privacy Protection and "
    "image proxies load the tracking pixel without a person reading)"
)
_PROVIDER_COLUMN = {
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "bounced",
    "spamreport": "spam",
}
_EXIT_COLUMN = {
    "exit_on:lead.replied": "replied",
    "exit_on:meeting.booked": "meetings",
    "exit_on:deal.won": "won",
    "disqualified": "declined",
}
_UNSUBSCRIBE_REASONS = frozenset({"unsubscribe", "unsubscribed", "group_unsubscribe"})


def provider_column(event: object, type_: object = None) -> str | None:
    """The column a provider's report counts in, None if none: a ``blocked`` bounce is
    temporary (SendGrid retries it); an unsubscribe is counted by the exit it causes."""
    if event == "bounce" and type_ not in (None, "bounce"):
        return None
    return _PROVIDER_COLUMN.get(str(event))


def exit_column(reason: str) -> str | None:
    """The column an enrollment's exit counts in (by its reason), None if none."""
    if reason in _UNSUBSCRIBE_REASONS or reason == "spamreport":
        return "unsubscribed"
    return _EXIT_COLUMN.get(reason)


@dataclass(frozen=True)
class Filters:
    """What to count: a time range (unix, inclusive start, exclusive end), one sequence."""

    since: float | None = None
    until: float | None = None
    sequence: str | None = None
    by: str | None = None  # "locale" or "source"

    def covers(self, at: float) -> bool:
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


@dataclass
class Funnel:
    """Counts of one sequence (and group): per step, and for the whole sequence."""

    steps: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, step: str, column: str, amount: int = 1) -> None:
        row = self.steps.setdefault(step, dict.fromkeys(COLUMNS, 0))
        row[column] += amount

    def total(self) -> dict[str, int]:
        out = dict.fromkeys(COLUMNS, 0)
        for row in self.steps.values():
            for column, value in row.items():
                out[column] += value
        return out


def _lead_group(store: Store, lead_id: str, by: str | None) -> str:
    if by is None:
        return ""
    record = store.get_lead(lead_id)
    value = record.data.get(by) if record else None
    return str(value) if value else "(none)"


def _count_lead(timeline: list[dict[str, Any]], filters: Filters, add: Any) -> None:
    """Add one lead's records to the funnels through ``add(sequence, step, column)``."""
    last_sent: dict[str, str] = {}  # sequence -> step last sent
    seen: set[tuple[str, str, str]] = set()  # (sequence, step, column) of provider reports
    for item in timeline:
        kind, at = item.get("kind"), float(item.get("at") or 0)
        sequence = item.get("sequence")
        if not isinstance(sequence, str) or (filters.sequence and sequence != filters.sequence):
            continue
        step = str(item.get("step") or "-")
        counted = filters.covers(at)
        if kind == "enrolled":
            last_sent.pop(sequence, None)
            seen = {k for k in seen if k[0] != sequence}
            if counted:
                add(sequence, step, "enrolled")
        elif kind == "touch" and item.get("outcome") == "sent":
            last_sent[sequence] = step
            if counted:
                add(sequence, step, "sent")
        elif kind == "touch" and item.get("outcome") in ("notified", "posted"):
            # notify and webhook steps reach people inside, not the lead: their own
            # columns, never "sent", and never the touch an exit is attributed to.
            if counted:
                add(sequence, step, str(item["outcome"]))
        elif kind == "provider":
            column = provider_column(item.get("event"), item.get("type"))
            if column and counted and (sequence, step, column) not in seen:
                seen.add((sequence, step, column))
                add(sequence, step, column)
        elif kind == "exited" and counted:
            column = exit_column(str(item.get("reason") or ""))
            if column:
                add(sequence, last_sent.get(sequence, "-"), column)


def day(at: float | None) -> str | None:
    """A range end as the counters' day (ISO date); it must be a UTC midnight."""
    if at is None:
        return None
    when = datetime.fromtimestamp(at, UTC)
    if when != datetime.combine(when.date(), time(), UTC):
        raise SettingsError(
            f"the counters count whole UTC days; {when.isoformat()} is not 00:00 UTC "
            "(give a date, or use --exact to count the leads' records to the second)"
        )
    return when.date().isoformat()


def build_report(store: Store, sequences: Iterable[str], filters: Filters) -> dict[str, Any]:
    """The funnels from the per-day counters (whole UTC days), with rates."""
    counts = store.counters.day_counts(
        day(filters.since), day(filters.until), filters.sequence, filters.by
    )
    funnels: dict[tuple[str, str], Funnel] = defaultdict(Funnel)
    for (sequence, group, step, column), value in sorted(counts.items()):
        if column in COLUMNS and value:
            funnels[(sequence, group)].add(step, column, value)
    return _assemble(funnels, sequences, filters)


def build_exact(store: Store, sequences: Iterable[str], filters: Filters) -> dict[str, Any]:
    """The funnels from every lead's timeline (any time range; slow for many leads)."""
    funnels: dict[tuple[str, str], Funnel] = defaultdict(Funnel)
    for lead_id in store.timeline.lead_ids():
        group = _lead_group(store, lead_id, filters.by)

        def add(sequence: str, step: str, column: str, group: str = group) -> None:
            funnels[(sequence, group)].add(step, column)

        _count_lead(store.timeline.read(lead_id), filters, add)
    return _assemble(funnels, sequences, filters)


def _assemble(
    funnels: dict[tuple[str, str], Funnel], sequences: Iterable[str], filters: Filters
) -> dict[str, Any]:
    """sequence -> group -> Funnel, as JSON-able data with rates; sequences in the
    order given, steps in their sequence's order when ``sequences`` maps ids to step ids
    (else by name), ``-`` (outcomes before any send) last."""
    order = {sequence: index for index, sequence in enumerate(sequences)}
    step_ids = sequences if isinstance(sequences, Mapping) else {}
    rows = []
    for (sequence, group), funnel in sorted(
        funnels.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0])
    ):
        known = list(step_ids.get(sequence, ()))
        steps = [
            {"step": step, **funnel.steps[step]}
            for step in sorted(
                funnel.steps,
                key=lambda s: (s == "-", known.index(s) if s in known else len(known), s),
            )
        ]
        rows.append(
            {
                "sequence": sequence,
                "group": group,
                "total": _with_rates(funnel.total()),
                "steps": [_with_rates(row) for row in steps],
            }
        )
    return {
        "since": filters.since,
        "until": filters.until,
        "by": filters.by,
        "note": OPENS_NOTE,
        "sequences": rows,
    }


def _with_rates(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for column, base in RATE_OF.items():
        denominator = row.get(base) or 0
        out[f"{column}_rate"] = round(row[column] / denominator, 4) if denominator else None
    return out


def _label(entry: dict[str, Any], group: str) -> str:
    return f"{entry['sequence']}[{group}]" if group else entry["sequence"]


def _table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for entry in report["sequences"]:
        for row in [*entry["steps"], {"step": "TOTAL", **entry["total"]}]:
            cells = [_label(entry, entry["group"]), row["step"]]
            for column in COLUMNS:
                rate = row.get(f"{column}_rate")
                cells.append(f"{row[column]}" + (f" ({rate:.0%})" if rate is not None else ""))
            rows.append(cells)
    return rows


def render_table(report: dict[str, Any]) -> str:
    header = ["sequence", "step", *[c + ("*" if c == "opened" else "") for c in COLUMNS]]
    rows = [header, *_table_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)) for r in rows
    ]
    lines.append(f"\n* {report['note']}")
    return "\n".join(line.rstrip() for line in lines)


def render_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    rate_columns = [f"{c}_rate" for c in RATE_OF]
    writer.writerow(["sequence", "group", "step", *COLUMNS, *rate_columns])
    for entry in report["sequences"]:
        for row in [*entry["steps"], {"step": "TOTAL", **entry["total"]}]:
            rates = ["" if row.get(c) is None else row[c] for c in rate_columns]
            writer.writerow(
                [entry["sequence"], entry["group"], row["step"], *[row[c] for c in COLUMNS], *rates]
            )
    return out.getvalue()


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)


#: The funnel chart's stages (per sequence totals).
FUNNEL = ("enrolled", "sent", "delivered", "opened", "clicked", "replied", "meetings", "won")


def _funnel_svg(total: dict[str, int], title: str) -> str:
    """A horizontal-bar funnel as inline SVG (no script, no external asset)."""
    top = max(1, *(total[stage] for stage in FUNNEL))
    bar_h, gap, label_w, width = 26, 6, 110, 640
    height = len(FUNNEL) * (bar_h + gap) + 10
    parts = [
        f'<svg class="funnel" role="img" aria-label="{escape(title)} funnel" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for index, stage in enumerate(FUNNEL):
        value = total[stage]
        bar_w = max(2.0, (width - label_w - 80) * value / top)
        x = label_w + (width - label_w - 80 - bar_w) / 2
        y = 5 + index * (bar_h + gap)
        parts.append(
            f'<text x="0" y="{y + bar_h * 0.7:.0f}" font-size="14">{stage}</text>'
            f'<rect data-stage="{stage}" data-value="{value}" x="{x:.1f}" y="{y}" '
            f'width="{bar_w:.1f}" height="{bar_h}" fill="#2f6fb0"/>'
            f'<text x="{width - 70}" y="{y + bar_h * 0.7:.0f}" font-size="14">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """A static page: a funnel chart and the table per sequence; no external assets."""
    sections = []
    for entry in report["sequences"]:
        title = _label(entry, entry["group"])
        head = "".join(f"<th>{escape(c)}</th>" for c in ("step", *COLUMNS))
        body = []
        for row in [*entry["steps"], {"step": "TOTAL", **entry["total"]}]:
            cells = "".join(
                f"<td>{row[c]}"
                + (
                    f" <small>({row[c + '_rate']:.0%})</small>"
                    if row.get(c + "_rate") is not None
                    else ""
                )
                + "</td>"
                for c in COLUMNS
            )
            body.append(f"<tr><td>{escape(str(row['step']))}</td>{cells}</tr>")
        sections.append(
            f"<section><h2>{escape(title)}</h2>{_funnel_svg(entry['total'], title)}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>nurture report</title><style>"
        "body{font-family:sans-serif;margin:2em;color:#222;background:#fff}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "</style></head><body><h1>nurture report</h1>"
        f"<p>* {escape(report['note'])}</p>{''.join(sections) or '<p>No data.</p>'}"
        "</body></html>\n"
    )
