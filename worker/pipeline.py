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
    MERGED,
    REQUALIFIED,
    Enrollment,
    ExitReason,
    touch_id,
)
from worker.enrollment_rules import respond
from worker.events import Event
from worker.lead_history import LEAD_FIELDS, field_changes, when_refusal
from worker.report import exit_column
from worker.sequences import Catalog, Sequence, condition_context
from worker.sequences.conditions import lookup
from worker.store import LeadRecord, Store
from worker.store import leads as flags
from worker.store.counters import day_fields, report_groups
from worker.store.timeline import Kind, batch, entry
from worker.timing import due_time, lead_zone

log = logging.getLogger(__name__)


# Reasons a lead leaves every sequence, whatever the sequence's exit_on says.
# (lead.deleted also erases the person: EventProcessor.erase.)
SUPPRESSING_TYPES = frozenset({"lead.unsubscribed", "lead.deleted"})
#: Events that can only end things. A CRM's webhooks arrive in no guaranteed order, so
#: one of these may be the first the worker hears of a lead, before the event with its
#: address: it is kept (a lead without an email) so the later event respects it.
ENDING_TYPES = SUPPRESSING_TYPES | {"lead.disqualified", "lead.replied", "meeting.booked"}
#: The person left (deleted in the CRM, erased on request): stop and forget them.
ERASING_TYPE = "lead.deleted"
#: The per-field time of attribute ``key`` is stored under ``attributes.<key>``.
ATTRIBUTE_TIME = "attributes."
#: The sequences a lead enters when it first becomes contactable, besides those of the
#: event types it has seen: those its first event would have started.
FIRST_EVENT_TYPE = "lead.created"


def merge_lead(
    stored: dict[str, Any] | None,
    times: dict[str, float],
    event: Event,
    stamp: float,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The lead's data and per-field times after this event (the lead fills in over time).

    Each field (and each attribute, under ``attributes.<key>``) keeps the value of the
    event with the latest ``stamp`` (its ``occurred_at``, else the time the worker applies
    it): an older event arriving late never overwrites newer data. On equal stamps the
    event applied later wins. An attribute set to ``null`` is removed, and the removal
    keeps its time, so an older value arriving late does not bring it back.

    Args:
        stored: The stored lead data (None for a new lead).
        times: Field name -> stamp of the value stored (fields stored before per-field
            times existed count as older than any event).
        event: The event being applied.
        stamp: The event's time (unix seconds).

    Returns:
        The merged data and the updated field times.
    """
    data: dict[str, Any] = dict(stored or {})
    new_times = dict(times)
    data["id"] = event.lead.id
    for name in LEAD_FIELDS:
        value = getattr(event.lead, name)
        if value is not None and stamp >= new_times.get(name, float("-inf")):
            data[name] = value
            new_times[name] = stamp
    attributes = dict(data.get("attributes") or {})
    for key, value in event.lead.attributes.items():
        slot = ATTRIBUTE_TIME + key
        if stamp < new_times.get(slot, float("-inf")):
            continue  # a newer value (or removal) is stored
        new_times[slot] = stamp
        if value is None:
            attributes.pop(key, None)  # an explicit null removes the attribute
        else:
            attributes[key] = value
    data["attributes"] = attributes
    return data, new_times


def never_contactable(record: LeadRecord | None) -> bool:
    """Whether the lead (before this event) has never been contactable.

    A lead stored before per-field times existed (no ``fts`` flag) that has an address
    was enrolled the old way, on its first event: it counts as contactable already. A
    lead with an address but without the ``contactable`` flag became contactable while
    suppressed or disqualified, or in an attempt cut short (a crash): its first
    sequences still start.
    """
    if record is None:
        return True
    if record.flags.get(flags.CONTACTABLE):
        return False
    return not record.email or flags.FIELD_TIMES in record.flags


def trigger_of(event: Event, occurred: datetime) -> dict[str, Any]:
    """What templates see as ``event``."""
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }


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
            notes: list[tuple[Kind, dict[str, Any]]] = []
            self._notes.pending = notes
            started = self.clock.now().timestamp()
            try:
                outcome = self._apply(event, record)
            finally:
                self._notes.pending = None
            written = [batch(started, notes)] if notes else []
            self.store.events.applied(event.id, event.lead.id, written)
            return outcome

    def note(self, lead_id: str, kind: Kind, **data: Any) -> None:
        """Put an entry on the lead's timeline: with the event being processed if there
        is one (no extra round trip: the event's entries are one batch), else at once
        (an unsubscribe from a webhook)."""
        pending: list[tuple[Kind, dict[str, Any]]] | None = getattr(self._notes, "pending", None)
        if pending is None:
            self.store.timeline.add(lead_id, entry(kind, self.clock.now().timestamp(), **data))
        else:
            pending.append((kind, data))

    def _apply(self, event: Event, record: LeadRecord | None) -> str:
        now = self.clock.now()
        occurred = event.occurred_at or now
        if record is not None and record.flags.get(flags.ERASED):
            # The person was erased: nothing of a later event about them is stored (an
            # event for the same address under another lead id is a new lead, and the
            # suppression list keeps it from being mailed).
            return "erased-lead"
        # Any event is kept, whatever it lacks: a lead without an address is stored and
        # is not contactable until an event brings one.
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

        if event.type == ERASING_TYPE:
            outcome = self.erase(lead, str(event.data.get("reason") or "deleted"))
            # Nothing about the person may be written after the erasure, notes included.
            pending: list[Any] | None = getattr(self._notes, "pending", None)
            if pending is not None:
                pending.clear()
            return outcome
        if event.type in SUPPRESSING_TYPES:
            reason = str(event.data.get("reason") or "unsubscribed")
            self.suppress(lead, reason, actions)
            return ",".join(actions) or "suppressed"
        if lead.flags.get(flags.MERGED_INTO):
            # Merged into another lead in the CRM: its events are kept, but only the
            # surviving lead is mailed (one person, one lead).
            return f"merged-into:{lead.flags[flags.MERGED_INTO]}"
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

        # Goals and enrollment on match (issue 14): one home, worker/enrollment_rules.py.
        respond(self, catalog, lead, event.type, trigger, occurred, now, actions)
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
        if blocked:
            refused = [s.id for s in catalog.triggered_by(event.type) if s.kind != "decline"]
            if refused:  # one entry for all: they were refused for the one reason
                self.note(lead.id, Kind.NOT_ENROLLED, sequence=refused, why=blocked)
            return ",".join(actions) or "no-op"
        if never_contactable(record):
            if self.store.suppressions.reason(lead.email or ""):
                return ",".join([*actions, "address-suppressed"])
            self.first_contactable(catalog, lead, trigger, occurred, now, actions)
            return ",".join(actions) or "no-op"
        for sequence in catalog.triggered_by(event.type):
            if sequence.kind == "decline":
                continue  # declines start only through disqualify(): at most one
            if self.enroll(sequence, lead, trigger, occurred, now):
                actions.append(f"enrolled:{sequence.id}")
        return ",".join(actions) or "no-op"

    def first_contactable(
        self,
        catalog: Catalog,
        lead: LeadRecord,
        trigger: dict[str, Any],
        occurred: datetime,
        now: datetime,
        actions: list[str],
    ) -> None:
        """The lead is contactable for the first time: start what its first event would have.

        That is every sequence triggered by ``lead.created`` or by an event type the lead
        has seen (this event's included), once each, in id order. Each starts as if
        triggered now by this event (its ``type`` the sequence's trigger, its ``data``
        this event's); an ``exit_on`` event seen since the lead's first event keeps the
        lead out, as it would have ended the enrollment.
        """
        seen = lead.seen_types()
        types = {FIRST_EVENT_TYPE, *seen}
        since = min(seen.values(), default=occurred.timestamp())
        for sequence in sorted(catalog.sequences.values(), key=lambda s: s.id):
            if sequence.kind == "decline" or sequence.trigger_event not in types:
                continue
            started = {**trigger, "type": sequence.trigger_event}
            if self.enroll(sequence, lead, started, occurred, now, exits_since=since):
                actions.append(f"enrolled:{sequence.id}")
        self.store.leads.set_flags(lead.id, {flags.CONTACTABLE: str(now.timestamp())})
        actions.append("contactable")

    def _save_lead(self, event: Event, record: LeadRecord | None, occurred: datetime) -> LeadRecord:
        """Store the lead's data and the event type's seen time; the lead as it is now."""
        times = record.field_times() if record else {}
        data, new_times = merge_lead(
            record.data if record else None, times, event, occurred.timestamp()
        )
        changed = field_changes(record.data if record else {}, data)
        if changed:
            # The lead's first data is the lead hash's now with the later changes undone
            # (worker/lead_history.py): its entry names nothing.
            self.note(event.lead.id, Kind.FIELDS, changed=changed if record else None)
        seen: dict[str, str] = {}
        previous_seen = record.seen(event.type) if record else None
        if previous_seen is None or occurred.timestamp() > previous_seen:
            seen[flags.SEEN + event.type] = str(occurred.timestamp())
        written = dict(seen)
        if new_times != times:
            written[flags.FIELD_TIMES] = json.dumps(new_times, sort_keys=True)
        if record is None or data != record.data:
            self.store.leads.save(event.lead.id, data, record.email if record else None, written)
        elif written:
            self.store.leads.set_flags(event.lead.id, written)
        # Under the lead's lock nobody else writes these: no need to read them back.
        return LeadRecord(
            id=event.lead.id, data=data, flags={**(record.flags if record else {}), **written}
        )

    # -- leaving --------------------------------------------------------------

    def erase(self, lead: LeadRecord, reason: str) -> str:
        """The person left: end everything at once and erase their personal data.

        Every enrollment exits (its pending touch cancelled); then the lead's data,
        enrollments, received content, email-index entry and the dead letters that
        mention the lead or its address are deleted. Kept: a tombstone on the lead id
        (``suppressed``, ``erased``: no personal data) and, for the address, only its
        keyed hash in the suppression list, so it is never mailed again (docs/crm.md).
        A lead merged into another (``merged_into``) is erased without suppressing the
        address, which the surviving lead may still use. Runs under the lead's lock.
        """
        actions: list[str] = []
        self.exit_all(lead.id, ExitReason.unsubscribed(reason), actions, only_kind=None)
        email = lead.email
        if email and not lead.flags.get(flags.MERGED_INTO):
            self.store.suppressions.suppress(email, reason)
        tombstone = {
            flags.SUPPRESSED: reason,
            flags.ERASED: str(self.clock.now().timestamp()),
        }
        if lead.flags.get(flags.MERGED_INTO):
            tombstone[flags.MERGED_INTO] = lead.flags[flags.MERGED_INTO]
        self.store.leads.erase(lead.id, email, tombstone)
        # The lead id as it appears in a stored event (plain, and inside a payload's
        # escaped JSON text).
        quoted = f'"id":"{lead.id}"'
        needles = [quoted, quoted.replace('"', '\\"'), f'"hubspot_id": "{lead.id}"']
        erased = self.store.dead.erase_mentioning([*needles, *([email] if email else [])])
        return ",".join([*actions, f"erased:{erased}-dead-letters"])

    def forget(self, who: str) -> list[str]:
        """``nurture forget``: erase a person named by address or lead id.

        An address erases every lead using it (the email index) and is suppressed even
        when no lead uses it (the request may come before the CRM's event). Returns the
        lead ids erased.
        """
        if "@" in who:
            lead_ids = self.store.leads.by_email(who)
            self.store.suppressions.suppress(who, "forget")
            self.store.dead.erase_mentioning([who])
        else:
            lead_ids = [who]
        erased = []
        for lead_id in lead_ids:
            with self.store.leads.lock(lead_id):
                lead = self.store.leads.get(lead_id)
                if lead is None or lead.flags.get(flags.ERASED):
                    continue
                self.erase(lead, "forget")
                erased.append(lead_id)
        return erased

    # -- merges ---------------------------------------------------------------

    def fold(self, merged_id: str, survivor_id: str) -> str:
        """The CRM merged ``merged_id`` into ``survivor_id``: one person, one lead.

        Under both leads' locks (taken in id order, so two folds cannot deadlock): each
        active enrollment of the merged lead exits (reason ``merged``, its pending
        touch cancelled) and, unless the survivor has an enrollment in that sequence
        already, goes on on the survivor at the same step and due time. The merged
        lead points to the survivor (flag ``merged_into``) and is never mailed again;
        the survivor counts as contactable already when the merged lead was, and
        inherits its suppression and its one decline. Idempotent.

        Returns:
            What happened, for logs.
        """
        first, second = sorted((merged_id, survivor_id))
        with self.store.leads.lock(first), self.store.leads.lock(second):
            merged = self.store.leads.get(merged_id)
            if merged is None:
                self.store.leads.set_flags(merged_id, {flags.MERGED_INTO: survivor_id})
                return "merged:unknown-lead"
            survivor = self.store.leads.get(survivor_id)
            actions = self._move_enrollments(merged_id, survivor_id)
            carry: dict[str, str | float | None] = {}
            survivor_flags = survivor.flags if survivor else {}
            for name in (flags.SUPPRESSED, flags.DECLINED, flags.CONTACTABLE):
                if merged.flags.get(name) and not survivor_flags.get(name):
                    carry[name] = merged.flags[name]
            if merged.email and not survivor_flags.get(flags.CONTACTABLE):
                carry[flags.CONTACTABLE] = str(self.clock.now().timestamp())
            if carry:
                self.store.leads.set_flags(survivor_id, carry)
            self.store.leads.set_flags(merged_id, {flags.MERGED_INTO: survivor_id})
            return ",".join(actions) or "merged"

    def _move_enrollments(self, merged_id: str, survivor_id: str) -> list[str]:
        """Exit the merged lead's active enrollments, continuing each on the survivor."""
        actions: list[str] = []
        kept = self.store.enrolled.all(survivor_id)
        for sequence_id, enrollment in self.store.enrolled.all(merged_id).items():
            if not enrollment.active:
                continue
            pending = enrollment.pending_touch(sequence_id, merged_id)
            due = dict(self.store.schedule.pending([pending])) if pending else {}
            if sequence_id not in kept and enrollment.step is not None:
                member = touch_id(sequence_id, enrollment.generation, enrollment.step, survivor_id)
                when = due.get(pending or "", self.clock.now().timestamp())
                self.store.enrolled.write(
                    survivor_id, sequence_id, enrollment, schedule=(member, when)
                )
                actions.append(f"moved:{sequence_id}")
            self.exit_one(merged_id, sequence_id, enrollment, MERGED)
            actions.append(f"exited:{sequence_id}")
        return actions

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
        column = exit_column(reason.text)
        count: list[str] = []
        if column is not None:
            # The report counts the outcome for the step sent last (``-``: none yet).
            step = self.store.ledger.last_sent(lead_id, sequence_id, enrollment.generation)
            lead = self.store.leads.get(lead_id)
            groups = report_groups(lead.data if lead else None)
            count = day_fields(self.clock.now().timestamp(), step or "-", column, groups)
        self.store.enrolled.write(
            lead_id,
            sequence_id,
            enrollment.exit(reason),
            unschedule=[pending] if pending else [],
            count=count,
        )

    # -- enrollment -----------------------------------------------------------

    def enroll(
        self,
        sequence: Sequence,
        lead: LeadRecord,
        trigger: dict[str, Any],
        occurred: datetime,
        now: datetime,
        exits_since: float | None = None,
    ) -> bool:
        """Start the sequence for the lead unless it is in it already; True if started.

        An ``exit_on`` event seen at or after ``exits_since`` (default: ``occurred``)
        keeps the lead out: it already did what ends the sequence.
        """
        context = condition_context(lead.data, trigger.get("data"))
        if sequence.trigger_when is not None and not sequence.trigger_when.matches(context):
            # The rule's fingerprint and the values it read: ``nurture lead`` renders the
            # sentence (worker/lead_history.py).
            refusal = when_refusal(sequence.trigger_when, context)
            self.note(lead.id, Kind.NOT_ENROLLED, sequence=sequence.id, **refusal)
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
            if seen is not None and seen >= (
                occurred.timestamp() if exits_since is None else exits_since
            ):
                why = f"the lead already did {exit_type} (exit_on) by the trigger's time"
                self.note(lead.id, Kind.NOT_ENROLLED, sequence=sequence.id, why=why)
                return False  # the lead already did what ends this sequence
        first = sequence.steps[0]
        enrollment = Enrollment.start(existing, first.id, trigger, now.timestamp())
        zone = lead_zone(lead.data, self.default_timezone)
        member = touch_id(sequence.id, enrollment.generation, first.id, lead.id)
        due = due_time(sequence, first, occurred, zone, member)
        self.store.enrolled.write(
            lead.id,
            sequence.id,
            enrollment,
            schedule=(member, due.timestamp()),
            count=day_fields(now.timestamp(), first.id, "enrolled", report_groups(lead.data)),
            new=True,
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
