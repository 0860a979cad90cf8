"""SendGrid Event Webhook batches: suppress on hard bounces, drops, spam reports and
unsubscribes; lift SendGrid's own group unsubscribe on ``group_resubscribe``; count
deliveries, opens and clicks per sequence step.

Event names and fields: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event.

Each SendGrid event is handled at most once per ``sg_event_id`` (SendGrid retries a
batch until it gets a 2xx, so replays are normal). Suppression runs *before* the id is
recorded: if we die in between, SendGrid's retry suppresses again, which is harmless.
Counting runs *after*: a crash in between loses one count instead of double-counting.

``custom_args`` set on the message (``lead_id``, ``sequence``, ``step``) come back as
top-level fields of every event.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from worker.report import provider_column
from worker.runtime import Runtime
from worker.sequences.engagement import fact, fields_for
from worker.store.counters import day_fields, report_groups
from worker.store.timeline import Kind, entry
from worker.suppression import resubscribe_address, suppress_address, unsubscribe_lead

log = logging.getLogger(__name__)

#: Events that stop all email to the address (and end its leads' enrollments).
SUPPRESSING = frozenset({"bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"})
#: Engagement events counted per sequence and step.
COUNTED = frozenset({"delivered", "open", "click"})
#: Suppressing events that are the person's choice rather than the address's state.
PERSONAL = frozenset({"spamreport", "unsubscribe", "group_unsubscribe"})
MAX_EVENTS = 10_000


@dataclass
class SendgridResult:
    """What one batch did.

    Attributes:
        processed: Events acted on (suppressed or counted).
        duplicates: Events already handled earlier (same ``sg_event_id``).
        ignored: Events with nothing to do (processed, deferred, soft bounces, ...).
        invalid: (index, reason) of events that could not be read (kept as dead letters).
        by_event: Count per SendGrid event name, for metrics.
    """

    processed: int = 0
    duplicates: int = 0
    ignored: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    by_event: Counter[str] = field(default_factory=Counter)


def is_suppressing(item: dict[str, Any]) -> bool:
    """True for events that end all email to the address.

    A ``bounce`` counts only when hard (``type`` == ``bounce``); ``blocked`` is a
    temporary refusal by the receiving server, and SendGrid itself keeps retrying it.
    """
    name = item.get("event")
    if name == "bounce":
        return item.get("type") == "bounce"
    return name in SUPPRESSING


def process_batch(runtime: Runtime, events: list[Any]) -> SendgridResult:
    """Apply one verified SendGrid batch.

    Raises:
        redis.RedisError: When Redis fails mid-batch; the caller answers 503 so SendGrid
            retries, and what was already done is skipped or repeated harmlessly.
    """
    result = SendgridResult()
    store = runtime.store
    for index, item in enumerate(events):
        if not isinstance(item, dict):
            result.invalid.append((index, f"expected a JSON object, got {type(item).__name__}"))
            continue
        name = item.get("event")
        event_id = item.get("sg_event_id")
        if not isinstance(name, str) or not isinstance(event_id, str) or not event_id:
            result.invalid.append((index, "event and sg_event_id are required"))
            continue
        if len(event_id) > 200:
            result.invalid.append((index, "sg_event_id is longer than 200 characters"))
            continue
        result.by_event[name] += 1
        if item.get("internal"):
            # A notify step's email to a person inside (custom_args "internal"): not a
            # lead's address, so never suppressed and never counted for a sequence.
            continue
        if is_suppressing(item):
            email = item.get("email")
            if not isinstance(email, str) or "@" not in email or len(email) > 320:
                result.invalid.append((index, f"{name} event without a valid email"))
                continue
            _suppress(runtime, item, name, email)
            if store.webhook_event_new(event_id):
                _count(runtime, item, name, "")
                result.processed += 1
            else:
                result.duplicates += 1
        elif name == "group_resubscribe":
            email = item.get("email")
            if not isinstance(email, str) or "@" not in email or len(email) > 320:
                result.invalid.append((index, f"{name} event without a valid email"))
                continue
            if store.webhook_event_new(event_id):
                lifted = resubscribe_address(runtime, email)
                log.info("SendGrid group_resubscribe: %d lead(s) resubscribed", len(lifted))
                result.processed += 1
            else:
                result.duplicates += 1
        elif name in COUNTED:
            sequence, step = item.get("sequence"), item.get("step")
            if not store.webhook_event_new(event_id):
                result.duplicates += 1
            elif isinstance(sequence, str) and isinstance(step, str) and sequence and step:
                _count(runtime, item, name, name)
                variant = item.get("variant")
                if isinstance(variant, str) and variant:
                    store.count(sequence[:200], f"{step[:200]}@{variant[:100]}", name)
                if name in ("open", "click"):
                    _record_engagement(runtime, item, name, sequence[:200], step[:200])
                result.processed += 1
            else:
                result.ignored += 1  # not one of our nurture messages
        else:
            result.ignored += 1
    return result


def _count(runtime: Runtime, item: dict[str, Any], name: str, counter: str) -> None:
    """Put the event on the lead's timeline and count it: in the running total
    ``counter`` ('' = none) and, the first time for its touch, in the report's day
    fields; in one atomic step."""
    lead_id, sequence, step = item.get("lead_id"), item.get("sequence"), item.get("step")
    if not isinstance(lead_id, str) or not lead_id:
        lead_id = ""
    if not isinstance(sequence, str) or not isinstance(step, str) or not sequence or not step:
        if lead_id:
            runtime.store.timeline.add(lead_id[:200], _report(runtime, item, name))
        return
    lead_id, sequence, step = lead_id[:200], sequence[:200], step[:200]
    column = provider_column(name, item.get("type"))
    once, days = "", []
    if column is not None and lead_id:
        generation = item.get("generation")
        gen = generation if isinstance(generation, str) and generation.isdigit() else "0"
        once = f"{sequence}:{gen}|reported:{column}:{step}"
        lead = runtime.store.leads.get(lead_id)
        variant = item.get("variant")
        groups = report_groups(
            lead.data if lead else None, variant[:100] if isinstance(variant, str) else ""
        )
        days = day_fields(_when(runtime, item), step, column, groups)
    runtime.store.counters.count_report(
        sequence, step, counter, lead_id, _report(runtime, item, name), once, days
    )


def _when(runtime: Runtime, item: dict[str, Any]) -> float:
    """The event's time as SendGrid gives it, else now."""
    stamp = item.get("timestamp")
    return float(stamp) if isinstance(stamp, int | float) else runtime.clock.now().timestamp()


def _record_engagement(
    runtime: Runtime, item: dict[str, Any], name: str, sequence: str, step: str
) -> None:
    """Remember what the lead opened or clicked, for engagement conditions and content.

    A click's ``url`` is matched against the content library: clicking a piece's link
    records the piece and its tag values too.
    """
    lead_id, generation = item.get("lead_id"), item.get("generation")
    if not isinstance(lead_id, str) or not lead_id:
        return
    facts = [fact("opened" if name == "open" else "clicked", step, sequence)]
    url = item.get("url")
    if name == "click" and isinstance(url, str):
        for piece in runtime.catalog.current.content.by_url(url):
            facts.append(fact("clicked_content", piece.id))
            facts += [fact("clicked_tag", v) for vs in piece.tags.values() for v in vs]
    gen = generation if isinstance(generation, str) and generation.isdigit() else "0"
    when = _when(runtime, item)
    runtime.store.engagement.record(lead_id, dict.fromkeys(fields_for(sequence, gen, facts)), when)


def _report(runtime: Runtime, item: dict[str, Any], name: str) -> str:
    """The timeline entry for one SendGrid event about one of our messages."""
    at = _when(runtime, item)
    extra = {"url": item["url"]} if name == "click" and isinstance(item.get("url"), str) else {}
    return entry(
        Kind.PROVIDER,
        at,
        event=name,
        type=item.get("type"),
        sequence=item.get("sequence"),
        step=item.get("step"),
        provider_id=item.get("sg_message_id"),
        **extra,
    )


def _suppress(runtime: Runtime, item: dict[str, Any], name: str, email: str) -> None:
    lead_ids = suppress_address(runtime, email, name)
    lead_id = item.get("lead_id")
    # A person who unsubscribed or complained stays out even if the lead has a new
    # address by now; a bounce concerns the address only.
    if name in PERSONAL and isinstance(lead_id, str) and lead_id and lead_id not in lead_ids:
        unsubscribe_lead(runtime, lead_id, name)
    # The address itself stays out of the log (personal data); the lead ids suffice.
    log.info(
        "SendGrid %s: address suppressed, %d lead(s) ended",
        name,
        len(lead_ids),
        extra={"sendgrid_event": name, "leads": lead_ids},
    )
