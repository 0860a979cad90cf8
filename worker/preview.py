"""``nurture preview``: the dated timeline of one sequence for a sample lead, and a
step's rendered email. Needs no Redis: nothing is queued or sent."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.catalog import LoadedCatalog, load_and_check
from worker.enrollment import touch_id
from worker.errors import CatalogError, RenderError
from worker.events import Lead
from worker.reach import Reach, notify_locale, notify_message, notify_recipient, webhook_call
from worker.rendering import Renderer
from worker.senders import Address, defaults_from, resolve
from worker.sequences import Sequence, Step, condition_context
from worker.sequences.variants import assign
from worker.settings import Settings
from worker.timing import due_time, lead_zone
from worker.webhooks import target_url


def preview(
    settings: Settings,
    sequence_id: str,
    lead_doc: dict[str, Any],
    start: datetime | None,
    step_id: str | None,
) -> str:
    """The preview text.

    Args:
        lead_doc: A lead object, or an event holding ``lead`` (and ``data``).
    """
    loaded, problems = load_and_check(settings)
    if loaded is None:
        raise CatalogError(problems)
    sequence = loaded.sequence(sequence_id)
    event_doc = lead_doc if "lead" in lead_doc else {"lead": lead_doc}
    lead = Lead.model_validate(event_doc["lead"]).model_dump(exclude_none=True)
    data = dict(event_doc.get("data") or {})
    start = start or datetime.now(UTC)
    zone = lead_zone(lead, settings.default_timezone)
    context = condition_context(lead, data)
    lines = [f"{sequence.id}: {sequence.description}".rstrip(": ")]
    trigger_name = sequence.trigger_event
    if sequence.match and sequence.trigger_when is not None:
        trigger_name = f"match ({sequence.trigger_when.describe()})"
    if sequence.trigger_when is not None and not sequence.trigger_when.matches(context):
        lines.append(
            f"note: this lead does not match the trigger's `when`; "
            f"{trigger_name} would not enroll it"
        )
    lines.append(f"trigger {trigger_name} at {start.astimezone(zone):%a %Y-%m-%d %H:%M %Z}")
    if sequence.match:
        lines.append(f"  re-enrollment: {sequence.reenroll.describe()}")
    lines += _timeline(loaded.renderer, sequence, lead, context, start, zone, settings)
    if step_id:
        lines += _rendered_step(settings, loaded, sequence, step_id, event_doc, lead, start)
    return "\n".join(lines)


def _timeline(
    renderer: Renderer,
    sequence: Sequence,
    lead: dict[str, Any],
    context: dict[str, Any],
    start: datetime,
    zone: ZoneInfo,
    settings: Settings,
) -> list[str]:
    """One line per step: when it goes out for this lead, and which file (or why not)."""
    lines = []
    base = start
    for step in sequence.steps:
        variants = _variant_lines(step, sequence.id, str(lead.get("id", "preview")))
        member = touch_id(sequence.id, 1, step.id, str(lead.get("id", "preview")))
        due = due_time(sequence, step, base, zone, member)
        path = _what(renderer, step, lead, settings)
        if step.when is not None and step.when.uses_engagement:
            # What the lead will have opened or clicked is not known yet: show the branch.
            lines.append(
                f"  {due.astimezone(zone):%a %Y-%m-%d %H:%M %Z}  {step.id:<20} "
                f"{path}\n      branch: only if {step.when.describe()}"
            )
            lines += variants
            base = due  # sent or skipped, the next step's wait counts from here
            continue
        skipped = step.when is not None and not step.when.matches(context)
        lines.append(
            f"  {due.astimezone(zone):%a %Y-%m-%d %H:%M %Z}  {step.id:<20} "
            f"{'skipped (its `when` does not match)' if skipped else path}"
        )
        lines += variants
        if not skipped:
            base = due
    lines.append("(the frequency cap and other sequences can move touches later)")
    return lines


def _rendered_step(
    settings: Settings,
    loaded: LoadedCatalog,
    sequence: Sequence,
    step_id: str,
    event_doc: dict[str, Any],
    lead: dict[str, Any],
    start: datetime,
) -> list[str]:
    """The step's email as the lead would get it: sender, subject, text (and HTML)."""
    chosen = loaded.step(sequence, step_id)
    trigger = {
        "id": event_doc.get("id", "preview"),
        "type": sequence.trigger_event,
        "occurred_at": start.isoformat(),
        "data": dict(event_doc.get("data") or {}),
    }
    if chosen.channel != "email":
        return ["", *_reach_lines(loaded.renderer, sequence, chosen, lead, trigger, settings)]
    who = resolve(defaults_from(settings), sequence.sender, lead)
    email = loaded.renderer.render(
        chosen.template,
        lead.get("locale"),
        {
            "lead": lead,
            "event": trigger,
            "sequence": {"id": sequence.id, "description": sequence.description},
            "step": {"id": chosen.id},
            "unsubscribe_url": f"{settings.public_url}/unsubscribe/PREVIEW",
            "postal_address": settings.postal_address or "(NURTURE_POSTAL_ADDRESS)",
            "sender": who.signature.as_context(),
        },
    )
    lines = ["", f"From: {_show(who.from_)}"]
    if who.reply_to:
        lines.append(f"Reply-To: {_show(who.reply_to)}")
    lines += [f"Subject: {email.subject}", "", email.text]
    if email.html:
        lines += ["", "--- html ---", email.html]
    return lines


def _show(address: Address) -> str:
    email = address.email or "(NURTURE_FROM_EMAIL)"
    return f"{address.name} <{email}>" if address.name else email


def _variant_lines(step: Step, sequence: str, lead_id: str) -> list[str]:
    """The A/B variants of a step, with their shares and this lead's, for the timeline
    (printed under the step's line)."""
    if not step.variants:
        return []
    total = sum(v.weight for v in step.variants)
    chosen = assign(step.variants, lead_id, sequence, step.id)
    parts = []
    for v in step.variants:
        what = f"template {v.template}" if v.template else "the step's template"
        if v.subject:
            what += f", subject {v.subject!r}"
        mark = "  <- this lead" if v is chosen else ""
        parts.append(f"      variant {v.id}: {v.weight / total:.0%}, {what}{mark}")
    winner = "winner: auto (after 100 sends each and p < 0.05)" if step.winner_auto else ""
    return [f"      A/B test {winner}".rstrip(), *parts]


def _reach(settings: Settings) -> Reach:
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    return Reach(
        settings.notify_to,
        secret,
        settings.webhook_targets,
        settings.webhook_timeout,
        settings.notify_locale,
    )


def _what(renderer: Renderer, step: Step, lead: dict[str, Any], settings: Settings) -> str:
    """What a step sends, for its line in the timeline."""
    if step.notify is not None:
        to, why = notify_recipient(step, lead, _reach(settings), defaults_from(settings))
        path = _template_path(renderer, step.template, notify_locale(step, _reach(settings)))
        return f"notify {to.email or '(NURTURE_FROM_EMAIL)'} ({why}): {path}"
    if step.webhook is not None:
        url = target_url(step, settings.webhook_targets)
        return f"webhook POST {url or f'(target {step.webhook.target} is not configured)'}"
    return _template_path(renderer, step.template, lead.get("locale"))


def _reach_lines(
    renderer: Renderer,
    sequence: Sequence,
    step: Step,
    lead: dict[str, Any],
    trigger: dict[str, Any],
    settings: Settings,
) -> list[str]:
    """What a notify step would email, or a webhook step would post."""
    reach = _reach(settings)
    key = touch_id(sequence.id, 1, step.id, str(lead.get("id", "preview"))).replace("\x1f", ".")
    if step.notify is not None:
        message = notify_message(
            renderer, sequence, step, lead, trigger, reach, defaults_from(settings), key
        )
        return [
            "(notify: an internal email, not to the lead; no footer, not capped)",
            f"From: {_show(Address(message.from_email, message.from_name))}",
            f"To: {_show(Address(message.to_email, message.to_name))}",
            f"Subject: {message.subject}",
            "",
            message.text,
        ]
    if not reach.webhook_secret:
        reach = replace(reach, webhook_secret="(NURTURE_WEBHOOK_SECRET)")
    call = webhook_call(sequence, step, lead, trigger, reach, key, 1)
    body = json.dumps(json.loads(call.body), indent=2, ensure_ascii=False)
    return [
        f"POST {call.url}",
        *(f"{name}: {value}" for name, value in call.headers.items()),
        "",
        body,
    ]


def _template_path(renderer: Renderer, name: str, locale: object) -> str:
    try:
        return str(renderer.resolve(name, str(locale) if locale else None))
    except RenderError as exc:
        return f"missing template: {exc}"
