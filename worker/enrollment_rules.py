"""Sequences that respond (issue 14): goals, and enrollment on match.

Called from the event pipeline at one point (:func:`respond`, under the lead's lock,
before ``exit_on``), so these rules live apart from the pipeline's own steps:

- **Goals**: an event listed in a sequence's ``goal`` ends the lead's active
  enrollment in it (exit reason ``goal:<event>``) and counts a conversion for the
  sequence and the last touch it sent (and that touch's A/B variant).
- **Enroll on match**: a sequence with ``trigger: {match: {...}}`` enrolls a lead the
  first time it comes to match, whatever event changed it (a budget filled in by a
  ``lead.updated``, a lifecycle stage set by ``crm.changed``); ``reenroll`` says when
  it may enroll again, never while it is in the sequence.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.enrollment import Enrollment, ExitReason
from worker.sequences import Catalog, Sequence, condition_context
from worker.sequences.conditions import MISSING, lookup
from worker.store import LeadRecord

if TYPE_CHECKING:
    from worker.pipeline import EventProcessor

log = logging.getLogger(__name__)


def respond(
    processor: EventProcessor,
    catalog: Catalog,
    lead: LeadRecord,
    event_type: str,
    trigger: dict[str, Any],
    occurred: datetime,
    now: datetime,
    actions: list[str],
) -> None:
    """Apply the responsive rules for one event (goals first: a goal that is also in
    ``exit_on`` counts as a conversion, not as a plain exit)."""
    apply_goals(processor, catalog, lead, event_type, actions)
    enroll_on_match(processor, catalog, lead, trigger, occurred, now, actions)


#: Key of the enrollment's trigger holding the watched value (``reenroll.when_changes``).
WATCHED = "reenroll_value"


def enroll_on_match(
    processor: EventProcessor,
    catalog: Catalog,
    lead: LeadRecord,
    trigger: dict[str, Any],
    occurred: datetime,
    now: datetime,
    actions: list[str],
) -> None:
    """Enroll the lead in each match-triggered sequence it matches now and may enter."""
    sequences = catalog.match_sequences
    if not sequences or lead.suppressed or lead.disqualified or not lead.email:
        return
    context = condition_context(lead.data, trigger.get("data"))
    for sequence in sequences:
        if sequence.trigger_when is None or not sequence.trigger_when.matches(context):
            continue
        existing = processor.store.enrolled.get(lead.id, sequence.id)
        if existing is not None and not may_reenroll(sequence, existing, context, now):
            continue
        started = dict(trigger)
        if sequence.reenroll.when_changes is not None:
            value = lookup(context, sequence.reenroll.when_changes)
            started[WATCHED] = None if value is MISSING else value
        if processor.enroll(sequence, lead, started, occurred, now):
            actions.append(f"enrolled:{sequence.id}")


def may_reenroll(
    sequence: Sequence, previous: Enrollment, context: dict[str, Any], now: datetime
) -> bool:
    """Whether a lead that was in ``sequence`` before may enter it again now."""
    if previous.active:
        return False  # never twice at a time
    rule = sequence.reenroll
    if rule.after is not None:
        return now.timestamp() >= previous.started + rule.after
    if rule.when_changes is not None:
        value = lookup(context, rule.when_changes)
        return (None if value is MISSING else value) != previous.trigger.get(WATCHED)
    return False  # reenroll: never


def apply_goals(
    processor: EventProcessor,
    catalog: Catalog,
    lead: LeadRecord,
    event_type: str,
    actions: list[str],
) -> None:
    """End the active enrollments whose sequence has ``event_type`` as a goal, and count
    each as a conversion."""
    if not any(event_type in sequence.goals for sequence in catalog.sequences.values()):
        return  # the usual case: nothing to read
    store = processor.store
    for sequence_id, enrollment in store.enrolled.all(lead.id).items():
        sequence = catalog.sequences.get(sequence_id)
        if not enrollment.active or sequence is None or event_type not in sequence.goals:
            continue
        # The last email to the lead: notify and webhook steps reach people inside.
        emails = [s for s in enrollment.done if _emails_lead(sequence, s)]
        touch = store.conversions.last_touch(lead.id, sequence_id, enrollment.generation, emails)
        processor.exit_one(lead.id, sequence_id, enrollment, ExitReason.goal(event_type))
        # After the exit: a crash in between loses one count rather than counting twice
        # (the replayed event finds the enrollment exited).
        store.conversions.count(sequence_id, event_type, touch)
        actions.append(f"converted:{sequence_id}")
        log.info(
            "lead %s reached goal %s of %s (last touch %s)",
            lead.id,
            event_type,
            sequence_id,
            touch.step if touch else None,
        )


def _emails_lead(sequence: Sequence, step_id: str) -> bool:
    """Whether the step (if it still exists) sends an email to the lead."""
    step = sequence.step(step_id)
    return step is None or step.channel == "email"
