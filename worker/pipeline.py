"""What one lead event does: update the lead, apply the always-exit rules, fit rules
and ``exit_on``, then enroll the lead in the sequences the event triggers.

Every function here runs under the lead's lock and is idempotent: the queue is
at-least-once, so processing the same event twice must change nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from worker.clock import Clock
from worker.enrollment import (
    DISQUALIFIED,
    REQUALIFIED,
    Enrollment,
    ExitReason,
    touch_id,
)
from worker.errors import PoisonEvent
from worker.events import Event
from worker.sequences import Catalog, Sequence, condition_context
from worker.sequences.conditions import lookup
from worker.store import LeadRecord, Store
from worker.store import leads as flags
from worker.store.timeline import Kind, entry
from worker.timing import due_time, lead_zone

log = logging.getLogger(__name__)

LEAD_FIELDS = ("email", "first_name", "last_name", "company", "locale", "timezone", "source")

# Reasons a lead leaves every sequence, whatever the sequence's exit_on says.
# lead.deleted: until erasure lands, a deleted contact is at least never mailed again.
SUPPRESSING_TYPES = frozenset({"lead.unsubscribed", "lead.deleted"})
#: Events that can only end things. A CRM's webhooks arrive in no guaranteed order, so
#: one of these may be the first the worker hears of a lead, before the event with its
#: address: it is kept (a lead without an email) so the later event respects it.
ENDING_TYPES = SUPPRESSING_TYPES | {"lead.disqualified", "lead.replied", "meeting.booked"}


def merge_lead(stored: dict[str, Any] | None, event: Event) -> dict[str, Any]:
    """The lead's data after this event: fields given win, attributes merge key by key."""
    data: dict[str, Any] = dict(stored or {})
    data["id"] = event.lead.id
    for name in LEAD_FIELDS:
        value = getattr(event.lead, name)
        if value is not None:
            data[name] = value
    attributes = dict(data.get("attributes") or {})
    for key, value in event.lead.attributes.items():
        if value is None:
            attributes.pop(key, None)  # an explicit null removes the attribute
        else:
            attributes[key] = value
    data["attributes"] = attributes
    return data


def trigger_of(event: Event, occurred: datetime) -> dict[str, Any]:
    """What templates see as ``event``."""
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Field -> [before, after] for the lead's changed fields (attributes as
    ``attributes.<name>``); empty when nothing changed."""
    out: dict[str, list[Any]] = {}
    for name in LEAD_FIELDS:
        if before.get(name) != after.get(name):
            out[name] = [before.get(name), after.get(name)]
    old_attrs, new_attrs = before.get("attributes") or {}, after.get("attributes") or {}
    for key in sorted(set(old_attrs) | set(new_attrs)):
        if old_attrs.get(key) != new_attrs.get(key):
            out[f"attributes.{key}"] = [old_attrs.get(key), new_attrs.get(key)]
    return out


class EventProcessor:
    """Applies one event to one lead.

    Args:
        store: The state store.
        catalog: Returns the catalog running now (it changes with live edits).
        clock: The time source.
        default_timezone: The zone of leads without one (``NURTURE_DEFAULT_TIMEZONE``).
    """

    def __init__(
        self, store: Store, catalog: Callable[[], Catalog], clock: Clock, default_timezone: str
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.default_timezone = default_timezone
        # The timeline entries of the event being processed by this thread: written with
        # the event's ``applied`` mark, in the round trip that makes anyway.
        self._notes = threading.local()

    def process(self, event: Event) -> str:
        """Process an event under its lead's lock; returns what happened, for logs."""
        with self.store.leads.lock(event.lead.id):
            done, record = self.store.enrolled.event_and_lead(event.id, event.lead.id)
            if done:
                return "replay"
            notes: list[str] = []
            self._notes.pending = notes
            try:
                outcome = self._apply(event, record)
            finally:
                self._notes.pending = None
            self.store.events.applied(event.id, event.lead.id, notes)
            return outcome

    def note(self, lead_id: str, kind: Kind, **data: Any) -> None:
        """Put an entry on the lead's timeline: with the event being processed if there
        is one (no extra round trip), else at once (an unsubscribe from a webhook)."""
        item = entry(kind, self.clock.now().timestamp(), **data)
        pending: list[str] | None = getattr(self._notes, "pending", None)
        if pending is None:
            self.store.timeline.add(lead_id, item)
        else:
            pending.append(item)

    def _apply(self, event: Event, record: LeadRecord | None) -> str:
        now = self.clock.now()
        occurred = event.occurred_at or now
        if record is None and not event.lead.email and event.type not in ENDING_TYPES:
            raise PoisonEvent(
                f"lead {event.lead.id!r} is new but the event has no lead.email; "
                "send the email on the lead's first event"
            )
        self.note(
            event.lead.id,
            Kind.EVENT,
            type=event.type,
            id=event.id,
            occurred=occurred.timestamp(),
            source=event.lead.source or (record.data.get("source") if record else None),
        )
        lead = self._save_lead(event, record, occurred)
        catalog = self.catalog()
        trigger = trigger_of(event, occurred)
        actions: list[str] = []

        if event.type in SUPPRESSING_TYPES:
            reason = str(event.data.get("reason") or "unsubscribed")
            self.suppress(lead, reason, actions)
            return ",".join(actions) or "suppressed"
        if event.type == "lead.disqualified":
            self.disqualify(lead, str(event.data.get("reason") or ""), trigger, now, actions)
        elif event.type == "lead.requalified":
            self.requalify(lead, actions)
        elif event.type in ("lead.created", "lead.updated") and not lead.disqualified:
            self.apply_fit_rules(catalog, lead, trigger, now, actions)
        elif lead.disqualified and lead.email and record is not None and not record.email:
            # The address arrives after the disqualification (webhooks out of order):
            # the one refusal that had nowhere to go then goes out now.
            reason = "" if lead.disqualified == "unspecified" else lead.disqualified
            self.disqualify(lead, reason, trigger, now, actions)
        if actions:  # disqualified or requalified: read the flags those wrote
            lead = self.store.leads.get(lead.id) or lead

        self.apply_exit_on(catalog, lead, event.type, actions)
        blocked = (
            f"suppressed ({lead.suppressed})"
            if lead.suppressed
            else f"disqualified ({lead.disqualified})"
            if lead.disqualified
            else "no email address yet"
            if not lead.email
            else ""
        )
        for sequence in catalog.triggered_by(event.type):
            if sequence.kind == "decline":
                continue  # declines start only through disqualify(): at most one
            if blocked:
                self.note(lead.id, Kind.NOT_ENROLLED, sequence=sequence.id, why=blocked)
            elif self.enroll(sequence, lead, trigger, occurred, now):
                actions.append(f"enrolled:{sequence.id}")
        return ",".join(actions) or "no-op"

    def _save_lead(self, event: Event, record: LeadRecord | None, occurred: datetime) -> LeadRecord:
        """Store the lead's data and the event type's seen time; the lead as it is now."""
        data = merge_lead(record.data if record else None, event)
        changed = _changes(record.data if record else {}, data)
        if changed:
            self.note(event.lead.id, Kind.FIELDS, changed=changed)
        seen: dict[str, str] = {}
        previous_seen = record.seen(event.type) if record else None
        if previous_seen is None or occurred.timestamp() > previous_seen:
            seen[flags.SEEN + event.type] = str(occurred.timestamp())
        if record is None or data != record.data:
            self.store.leads.save(event.lead.id, data, record.email if record else None, seen)
        elif seen:
            self.store.leads.set_flags(event.lead.id, seen)
        # Under the lead's lock nobody else writes these: no need to read them back.
        return LeadRecord(
            id=event.lead.id, data=data, flags={**(record.flags if record else {}), **seen}
        )

    # -- the always-exit rules ------------------------------------------------

    def suppress(self, lead: LeadRecord, reason: str, actions: list[str]) -> None:
        """The lead unsubscribed (or its address bounced): end everything, send nothing."""
        if not lead.suppressed:
            self.store.leads.set_flags(lead.id, {flags.SUPPRESSED: reason})
            self.note(lead.id, Kind.SUPPRESSED, reason=reason)
        self.exit_all(lead.id, ExitReason.unsubscribed(reason), actions, only_kind=None)

    def disqualify(
        self,
        lead: LeadRecord,
        reason: str,
        trigger: dict[str, Any],
        now: datetime,
        actions: list[str],
    ) -> None:
        """End every nurture enrollment and send one polite decline, never two."""
        self.store.leads.set_flags(lead.id, {flags.DISQUALIFIED: reason or "unspecified"})
        self.note(lead.id, Kind.DISQUALIFIED, reason=reason or "unspecified")
        self.exit_all(lead.id, DISQUALIFIED, actions, only_kind="nurture")
        actions.append(f"disqualified:{reason or 'unspecified'}")
        if lead.suppressed or (lead.email and self.store.suppressions.reason(lead.email)):
            return
        if not lead.email:
            # Disqualified before any event gave its address (webhooks out of order):
            # the refusal goes out when an event brings the address (see _apply).
            actions.append("no-decline:no-email")
            return
        data = dict(trigger.get("data") or {})
        data["reason"] = reason or None
        context = condition_context(lead.data, data)
        # One decline only: of the decline sequences whose `when` fits, one written for
        # this case (with a `when`) goes before a catch-all (without); then by id.
        declines = sorted(
            (
                sequence
                for sequence in self.catalog().decline_sequences
                if sequence.trigger_when is None or sequence.trigger_when.matches(context)
            ),
            key=lambda sequence: (sequence.trigger_when is None, sequence.id),
        )
        if not declines or not self.store.leads.claim_decline(lead.id, now.timestamp()):
            return
        decline_trigger = {**trigger, "data": data}
        occurred = datetime.fromisoformat(str(trigger["occurred_at"]).replace("Z", "+00:00"))
        if self.enroll(declines[0], lead, decline_trigger, occurred, now):
            self.note(lead.id, Kind.DECLINE, sequence=declines[0].id, reason=reason or None)
            actions.append(f"enrolled:{declines[0].id}")

    def requalify(self, lead: LeadRecord, actions: list[str]) -> None:
        """Let the lead back into nurture, withdrawing a refusal that has not gone out.

        A person who requalifies a lead has changed their mind: a refusal still waiting
        for its 2-20 h delay must not arrive afterwards. The lead's one decline is given
        back only if nothing was sent, so a later disqualification can still decline it
        once, and a lead that did get its refusal never gets a second.
        """
        self.store.leads.set_flags(lead.id, {flags.DISQUALIFIED: None})
        actions.append("requalified")
        self.exit_all(lead.id, REQUALIFIED, actions, only_kind="decline")
        declines = {s.id for s in self.catalog().decline_sequences}
        # Read after the exit: the send reservation checks the enrollment atomically,
        # so no decline can be reserved from here on, and an empty ledger means none was.
        if not declines & self.store.ledger.sequences_touched(lead.id):
            self.store.leads.set_flags(lead.id, {flags.DECLINED: None})

    def apply_fit_rules(
        self,
        catalog: Catalog,
        lead: LeadRecord,
        trigger: dict[str, Any],
        now: datetime,
        actions: list[str],
    ) -> None:
        """Disqualify on the first matching fit rule, unless the values that rule reads
        were already judged and the lead was requalified by a person since."""
        context = condition_context(lead.data, trigger.get("data"))
        for rule in catalog.fit_rules:
            if not rule.when.matches(context):
                continue
            # Only what the rule reads: an update to anything else (a new company name)
            # must not undo a person's requalification.
            judged = {path: lookup(context, path) for path in rule.when.paths}
            signature = hashlib.sha256(
                (rule.id + json.dumps(judged, sort_keys=True, default=str)).encode()
            ).hexdigest()[:16]
            if lead.flags.get(flags.FIT_SIGNATURE) == signature:
                return  # requalified by hand with unchanged data: respect that
            self.store.leads.set_flags(lead.id, {flags.FIT_SIGNATURE: signature})
            fit_trigger = {**trigger, "data": {**trigger.get("data", {}), "rule": rule.id}}
            self.disqualify(lead, rule.reason, fit_trigger, now, actions)
            return
        if lead.flags.get(flags.FIT_SIGNATURE):
            # The lead fits now: a waiver was for the data judged then, so the same
            # values coming back later are judged again.
            self.store.leads.set_flags(lead.id, {flags.FIT_SIGNATURE: None})

    def apply_exit_on(
        self, catalog: Catalog, lead: LeadRecord, event_type: str, actions: list[str]
    ) -> None:
        """End the enrollments whose sequence lists this event type in ``exit_on``."""
        if not any(event_type in sequence.exit_on for sequence in catalog.sequences.values()):
            return  # the usual case for lead.created and lead.updated: nothing to read
        for sequence_id, enrollment in self.store.enrolled.all(lead.id).items():
            sequence = catalog.sequences.get(sequence_id)
            if enrollment.active and sequence is not None and event_type in sequence.exit_on:
                self.exit_one(lead.id, sequence_id, enrollment, ExitReason.exit_on(event_type))
                actions.append(f"exited:{sequence_id}")

    def exit_all(
        self, lead_id: str, reason: ExitReason, actions: list[str], only_kind: str | None
    ) -> None:
        """End the lead's active enrollments (only those of ``only_kind``, if given)."""
        catalog = self.catalog()
        for sequence_id, enrollment in self.store.enrolled.all(lead_id).items():
            if not enrollment.active:
                continue
            sequence = catalog.sequences.get(sequence_id)
            if only_kind is not None and sequence is not None and sequence.kind != only_kind:
                continue
            self.exit_one(lead_id, sequence_id, enrollment, reason)
            actions.append(f"exited:{sequence_id}")

    def exit_one(
        self, lead_id: str, sequence_id: str, enrollment: Enrollment, reason: ExitReason
    ) -> None:
        """End one enrollment and cancel its pending touch."""
        pending = enrollment.pending_touch(sequence_id, lead_id)
        self.note(
            lead_id, Kind.EXITED, sequence=sequence_id, reason=reason.text, step=enrollment.step
        )
        self.store.enrolled.write(
            lead_id,
            sequence_id,
            enrollment.exit(reason),
            unschedule=[pending] if pending else [],
        )

    # -- enrollment -----------------------------------------------------------

    def enroll(
        self,
        sequence: Sequence,
        lead: LeadRecord,
        trigger: dict[str, Any],
        occurred: datetime,
        now: datetime,
    ) -> bool:
        """Start the sequence for the lead unless it is in it already; True if started."""
        context = condition_context(lead.data, trigger.get("data"))
        if sequence.trigger_when is not None and not sequence.trigger_when.matches(context):
            why = f"when: {sequence.trigger_when.failing(context)}"
            self.note(lead.id, Kind.NOT_ENROLLED, sequence=sequence.id, why=why)
            return False
        if not sequence.steps:
            return False
        existing = self.store.enrolled.get(lead.id, sequence.id)
        if existing is not None and (
            existing.active or existing.trigger.get("id") == trigger["id"]
        ):
            if existing.active:
                self.note(lead.id, Kind.NOT_ENROLLED, sequence=sequence.id, why="already in it")
            return False  # at most once at a time; and a replayed trigger starts nothing
        for exit_type in sequence.exit_on:
            seen = lead.seen(exit_type)
            if seen is not None and seen >= occurred.timestamp():
                why = f"the lead already did {exit_type} (exit_on) by the trigger's time"
                self.note(lead.id, Kind.NOT_ENROLLED, sequence=sequence.id, why=why)
                return False  # the lead already did what ends this sequence
        first = sequence.steps[0]
        enrollment = Enrollment.start(existing, first.id, trigger, now.timestamp())
        zone = lead_zone(lead.data, self.default_timezone)
        member = touch_id(sequence.id, enrollment.generation, first.id, lead.id)
        due = due_time(sequence, first, occurred, zone, member)
        self.store.enrolled.write(
            lead.id, sequence.id, enrollment, schedule=(member, due.timestamp())
        )
        self.note(
            lead.id,
            Kind.ENROLLED,
            sequence=sequence.id,
            step=first.id,
            due=due.timestamp(),
            trigger=trigger.get("type"),
        )
        log.debug("enrolled %s in %s, first touch due %s", lead.id, sequence.id, due)
        return True
