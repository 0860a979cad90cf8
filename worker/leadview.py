"""``nurture lead``: one lead's record, its timeline, and why it is not in each sequence
it is not in.

Read-only. The timeline is what the worker recorded as it went (``worker/store/timeline.py``);
the "why not" for a sequence comes first from the enrollment (exited, and why), then
from what the timeline says the worker decided when the trigger came (the ``when`` part
that was false, suppressed, disqualified...), and otherwise from the lead as it is now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.lead_history import explain
from worker.sequences import Catalog, Sequence, condition_context
from worker.store import LeadRecord, Store

#: How each timeline entry kind reads in the text view.
_SKIP_WORDS = {
    "condition": "skipped: the step's condition is false",
    "send window": "waiting: outside the send window",
    "frequency cap": "held back by the frequency cap",
    "step removed from the sequence": "skipped: the step was removed from the sequence",
}


def find_leads(store: Store, key: str) -> list[str]:
    """Lead ids for an id or an email address (an address may belong to several leads)."""
    if "@" in key:
        return sorted(store.leads_by_email(key))
    return [key] if store.get_lead(key) is not None or store.timeline.read(key) else []


def lead_view(store: Store, catalog: Catalog, lead_id: str) -> dict[str, Any]:
    """Everything ``nurture lead`` shows, as JSON-able data."""
    record = store.get_lead(lead_id)
    enrollments = store.enrollments(lead_id)
    timeline = explain(store.timeline.read(lead_id), record.data if record else None, catalog)
    pending = dict(store.scheduled_for(lead_id))
    view_enrollments: dict[str, Any] = {}
    for sequence_id, enrollment in sorted(enrollments.items()):
        member = enrollment.pending_touch(sequence_id, lead_id)
        view_enrollments[sequence_id] = {
            "state": enrollment.state.value,
            "step": enrollment.step,
            "done": list(enrollment.done),
            "started": enrollment.started,
            "reason": enrollment.reason,
            "trigger": enrollment.trigger.get("type"),
            "next_due": pending.get(member) if member else None,
        }
    not_in = {
        sequence.id: why_not(sequence, record, enrollments.get(sequence.id), timeline)
        for sequence in sorted(catalog.sequences.values(), key=lambda s: s.id)
        if not (enrollments.get(sequence.id) and enrollments[sequence.id].active)
    }
    return {
        "id": lead_id,
        "lead": record.data if record else None,
        "flags": dict(record.flags) if record else {},
        "suppressed": (record.suppressed or None) if record else None,
        "disqualified": (record.disqualified or None) if record else None,
        "enrollments": view_enrollments,
        "timeline": timeline,
        "not_in": not_in,
    }


def why_not(
    sequence: Sequence,
    record: LeadRecord | None,
    enrollment: Any,
    timeline: list[dict[str, Any]],
) -> str:
    """Why the lead is not (or no longer) in ``sequence``, in one line."""
    if enrollment is not None:
        if enrollment.state.value == "exited":
            return f"exited: {enrollment.reason}"
        return "finished: every step passed"
    refusals = [
        e for e in timeline if e.get("kind") == "not_enrolled" and e.get("sequence") == sequence.id
    ]
    if refusals:
        return f"not enrolled: {refusals[-1]['why']}"
    if record is None:
        return "the lead is not stored (no event with its address was applied)"
    if sequence.kind == "decline":
        if record.disqualified:
            return "the lead's one decline went out through another sequence, or was not needed"
        return "declines start only when the lead is disqualified"
    if record.suppressed:
        return f"suppressed ({record.suppressed})"
    if record.disqualified and sequence.kind == "nurture":
        return f"disqualified ({record.disqualified})"
    if record.seen(sequence.trigger_event) is None:
        return f"trigger event {sequence.trigger_event} never seen"
    if sequence.trigger_when is not None:
        failing = sequence.trigger_when.failing(condition_context(record.data, None))
        if failing:
            return f"when condition false: {failing}"
    return (
        f"{sequence.trigger_event} was seen before this sequence existed, or before this "
        "worker recorded timelines"
    )


def _time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _entry_text(item: dict[str, Any]) -> str:
    """One timeline entry in words."""
    kind = item.get("kind")
    where = (
        f"{item.get('sequence')}/{item.get('step')}" if item.get("step") else item.get("sequence")
    )
    if kind == "event":
        source = f", source {item['source']}" if item.get("source") else ""
        return f"event {item.get('type')} (id {item.get('id')}{source})"
    if kind == "fields":
        changes = item.get("changed") or {}
        said = ", ".join(
            f"{name} {old!r} -> {new!r}" for name, (old, new) in sorted(changes.items())
        )
        if not said:  # the lead's first data, and its values are not known
            return f"lead first stored ({item.get('note')})"
        note = f" ({item['note']})" if item.get("note") else ""
        return f"fields changed: {said}{note}"
    if kind == "enrolled":
        due = _time(item.get("due"))
        return f"enrolled in {item.get('sequence')}: first step {item.get('step')} due {due}"
    if kind == "not_enrolled":
        return f"not enrolled in {item.get('sequence')}: {item.get('why')}"
    if kind == "exited":
        return f"exited {where}: {item.get('reason')}"
    if kind in ("suppressed", "disqualified"):
        return f"{kind}: {item.get('reason')}"
    if kind == "decline":
        return f"decline sequence {item.get('sequence')} started (reason {item.get('reason')})"
    if kind == "touch":
        outcome = item.get("outcome")
        due = f" (due {_time(item.get('due'))})"
        if outcome == "sent":
            return (
                f"SENT {where}{due} via {item.get('provider')}, id {item.get('provider_id')}: "
                f"{item.get('subject')!r}"
            )
        if outcome == "notified":
            return (
                f"NOTIFIED {item.get('to')} {where}{due} via {item.get('provider')}, "
                f"id {item.get('provider_id')}: {item.get('subject')!r}"
            )
        if outcome == "posted":
            return f"POSTED {where}{due} to {item.get('url')}: {item.get('provider_id')}"
        until = f", next try {_time(item.get('until'))}" if item.get("until") else ""
        return f"NOT SENT {where}{due}: {outcome}: {item.get('detail')}{until}"
    if kind == "skip":
        words = _SKIP_WORDS.get(str(item.get("reason")), f"skipped: {item.get('reason')}")
        detail = f" ({item['detail']})" if item.get("detail") else ""
        until = f" until {_time(item.get('until'))}" if item.get("until") else ""
        return f"NOT SENT {where}: {words}{detail}{until}"
    if kind == "provider":
        kind_of = f" ({item['type']})" if item.get("type") else ""
        return f"SendGrid reported {item.get('event')}{kind_of} for {where}"
    return str(item)


def render_text(view: dict[str, Any]) -> str:
    """The view for people."""
    lines = [f"lead {view['id']}"]
    lead = view.get("lead")
    if lead is None:
        lines.append("  not stored")
    else:
        for name in ("email", "first_name", "last_name", "company", "locale", "timezone", "source"):
            if lead.get(name) is not None:
                lines.append(f"  {name}: {lead[name]}")
        for name, value in sorted((lead.get("attributes") or {}).items()):
            lines.append(f"  attributes.{name}: {value!r}")
    if view.get("suppressed"):
        lines.append(f"  SUPPRESSED: {view['suppressed']}")
    if view.get("disqualified"):
        lines.append(f"  DISQUALIFIED: {view['disqualified']}")
    lines.append("")
    lines.append("enrollments:")
    for sequence_id, enr in view["enrollments"].items():
        state = enr["state"]
        extra = f", why: {enr['reason']}" if enr.get("reason") else ""
        nxt = f", next step {enr['step']} due {_time(enr['next_due'])}" if enr.get("step") else ""
        done = ", ".join(enr["done"]) or "none"
        lines.append(f"  {sequence_id}: {state}{extra}{nxt}; steps passed: {done}")
    if not view["enrollments"]:
        lines.append("  none")
    lines.append("")
    lines.append("timeline:")
    for item in view["timeline"]:
        lines.append(f"  {_time(item.get('at'))}  {_entry_text(item)}")
    if not view["timeline"]:
        lines.append("  nothing recorded")
    lines.append("")
    lines.append("not in:")
    for sequence_id, why in view["not_in"].items():
        lines.append(f"  {sequence_id}: {why}")
    if not view["not_in"]:
        lines.append("  (in every sequence)")
    return "\n".join(lines)
