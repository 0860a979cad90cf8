"""Send due touches: check the enrollment, the step's condition, the send window and
the frequency cap; reserve the send in the ledger; render; deliver; record and move on.

The ledger makes each (enrollment, step) produce at most one email, however often
the queue delivers the message: a retry after a crash never sends again, and a send
whose outcome is unknown is recorded for the operator instead of being repeated.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import redis

from worker.catalog import LoadedCatalog
from worker.clock import Clock
from worker.delivery import Delivery, Message
from worker.enrollment import (
    DISQUALIFIED,
    SEQUENCE_REMOVED,
    Enrollment,
    ExitReason,
    TouchRef,
    touch_id,
)
from worker.errors import (
    OutcomeUnknownError,
    PermanentDeliveryError,
    RenderError,
    TransientDeliveryError,
)
from worker.sequences import Sequence, condition_context
from worker.store import LeadRecord, LedgerState, Sent, Store, Verdict
from worker.store.timeline import Kind, entry
from worker.timing import due_time, lead_zone, open_slot

log = logging.getLogger(__name__)


class TouchOutcome(StrEnum):
    """What processing one claimed touch did."""

    SENT = "sent"
    SKIPPED = "skipped"  # the step's condition was false, or a live edit removed it
    STALE = "stale"  # the enrollment no longer waits for this touch
    EXITED = "exited"  # the sequence was removed, or the lead disqualified
    WINDOW = "window"  # outside the send window: moved to its next opening
    CAPPED = "capped"  # held back by the frequency cap
    BUSY = "busy"  # another worker is sending it right now
    DUPLICATE = "duplicate"  # finished already
    UNKNOWN = "unknown"  # the outcome of a send is unknown: recorded, not resent
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    RETRY = "retry"  # a transient failure: tried again later
    ERROR = "error"  # an unexpected error: dead-lettered


@dataclass(frozen=True)
class SendSettings:
    """The settings the sender reads."""

    frequency_cap: float
    send_timeout: float
    default_timezone: str
    from_email: str
    from_name: str | None
    postal_address: str
    max_attempts: int


@dataclass(frozen=True)
class Touch:
    """One claimed touch: the schedule member and when it was due."""

    member: str
    due: float


@dataclass(frozen=True)
class _Pending:
    """A touch being processed, with what was read for it."""

    touch: Touch
    ref: TouchRef
    sequence: Sequence
    enrollment: Enrollment
    lead: LeadRecord
    now: datetime
    zone: ZoneInfo
    received: frozenset[str]


def backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds before the next attempt: the provider's word, else exponential with jitter."""
    if retry_after is not None:
        return max(1.0, min(retry_after, 3600.0))
    base: float = min(3600.0, 5.0 * 2**attempt)
    return base * (0.5 + random.random() / 2)


class TouchSender:
    """Processes claimed touches.

    Args:
        store: The state store.
        catalog: Returns the catalog (and its renderer) running now.
        clock: The time source.
        delivery: Returns the delivery backend (built on first use).
        unsubscribe_url: The signed one-click unsubscribe URL of a lead.
        settings: The settings the sender reads.
    """

    def __init__(
        self,
        store: Store,
        catalog: Callable[[], LoadedCatalog],
        clock: Clock,
        delivery: Callable[[], Delivery],
        unsubscribe_url: Callable[[str], str],
        settings: SendSettings,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.delivery = delivery
        self.unsubscribe_url = unsubscribe_url
        self.settings = settings

    def send_batch(self, touches: list[Touch]) -> dict[str, int]:
        """Process touches one by one; one bad touch never stops the others."""
        outcomes: dict[str, int] = {}
        for touch in touches:
            try:
                outcome = self.send(touch)
            except redis.RedisError:
                raise  # the queue retries the message; the ledger prevents duplicates
            except Exception as exc:
                log.exception("touch %r failed unexpectedly", touch.member)
                self.store.dead.add("touch", f"unexpected error: {exc!r}", {"touch": touch.member})
                self.store.schedule.release_claim(touch.member)
                outcome = TouchOutcome.ERROR
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    def send(self, touch: Touch) -> TouchOutcome:
        """Process one touch; returns what happened."""
        ref = TouchRef.parse(touch.member)
        now = self.clock.now()
        state = self.store.enrolled.touch_state(ref.lead_id, ref.sequence)
        lead, enrollment = state.lead, state.enrollment
        if lead is None or enrollment is None or not enrollment.waits_for(ref.generation, ref.step):
            self.store.schedule.release_claim(touch.member)
            return TouchOutcome.STALE
        sequence = self.catalog().catalog.sequences.get(ref.sequence)
        if sequence is None:
            # Live edit removed the sequence: end its enrollments cleanly.
            return self._exit(touch, enrollment, SEQUENCE_REMOVED, TouchOutcome.EXITED, now)
        if lead.disqualified and sequence.kind == "nurture":
            return self._exit(touch, enrollment, DISQUALIFIED, TouchOutcome.EXITED, now)
        zone = lead_zone(lead.data, self.settings.default_timezone)
        job = _Pending(touch, ref, sequence, enrollment, lead, now, zone, state.received)
        step = sequence.step(ref.step)
        if step is None:
            # Live edit removed the step: skip it, keep the lead's place in the sequence.
            note = self._note(job, Kind.SKIP, reason="step removed from the sequence")
            return self._finish(job, "", TouchOutcome.SKIPPED, note=note)
        context = condition_context(lead.data, enrollment.trigger.get("data"))
        if step.when is not None and not step.when.matches(context):
            why = step.when.failing(context)
            note = self._note(job, Kind.SKIP, reason="condition", detail=f"when: {why}")
            return self._finish(job, "", TouchOutcome.SKIPPED, note=note)
        slot = open_slot(sequence, now, zone)
        if slot > now:
            note = self._note(job, Kind.SKIP, reason="send window", until=slot.timestamp())
            self.store.schedule.reschedule(touch.member, slot.timestamp(), note)
            return TouchOutcome.WINDOW
        return self._reserve(job, step.template)

    def _reserve(self, job: _Pending, template: str) -> TouchOutcome:
        """Reserve the send in the ledger (with the frequency cap), then deliver."""
        touch, ref, now = job.touch, job.ref, job.now
        capped = job.sequence.kind == "nurture" and self.settings.frequency_cap > 0
        if capped and self._older_touch_due(touch, job.lead, now):
            # A touch of this lead held back before this one fell due is due now too: it
            # goes first, and this one looks again a second later (keeping its place).
            self.store.leads.mark_held(ref.lead_id, ref.ledger_field, touch.due)
            self.store.schedule.reschedule(touch.member, now.timestamp() + 1)
            return TouchOutcome.CAPPED
        reservation = self.store.ledger.reserve(
            touch.member,
            job.lead.email or "",
            now.timestamp(),
            self.settings.frequency_cap,
            capped,
            self.settings.send_timeout,
        )
        match reservation.verdict:
            case Verdict.STALE:
                self.store.schedule.release_claim(touch.member)
                return TouchOutcome.STALE
            case Verdict.BUSY:
                return TouchOutcome.BUSY  # another worker is sending it; its lease covers it
            case Verdict.DONE:
                self.store.schedule.release_claim(touch.member)
                return TouchOutcome.DUPLICATE
            case Verdict.UNKNOWN:
                self.store.ledger.record_unknown(touch.member, now.timestamp())
                self.store.dead.add(
                    "touch",
                    "outcome unknown: a worker stopped in the middle of sending; not resent",
                    {"touch": touch.member},
                )
                note = self._note(job, Kind.TOUCH, outcome="unknown", detail="worker stopped")
                return self._finish(job, "", TouchOutcome.UNKNOWN, note=note)
            case Verdict.SUPPRESSED:
                reason = ExitReason.suppressed(reservation.detail)
                return self._exit(touch, job.enrollment, reason, TouchOutcome.SUPPRESSED, now)
            case Verdict.CAPPED:
                assert reservation.free_at is not None  # the script gives it with CAPPED
                free_at = datetime.fromtimestamp(reservation.free_at, now.tzinfo)
                note = self._note(job, Kind.SKIP, reason="frequency cap", until=reservation.free_at)
                self._hold_back(touch, job.sequence, job.zone, free_at, note)
                return TouchOutcome.CAPPED
            case Verdict.OK:
                if ref.ledger_field in job.lead.held():
                    self.store.leads.drop_held(ref.lead_id, ref.ledger_field)
                return self._deliver(job, template, reservation.previous_touch)

    # -- the frequency cap's hold-backs -----------------------------------------

    def _held(self, lead: LeadRecord) -> dict[str, float]:
        """The lead's touches held back by the cap and still pending: member -> since.

        Marks of touches no longer pending (their enrollment exited or moved on) are
        dropped on the way.
        """
        marks = lead.held()
        if not marks:
            return {}
        enrollments = self.store.enrolled.all(lead.id)
        held: dict[str, float] = {}
        gone = []
        for field, since in marks.items():
            sequence_id, generation, step_id = field.split(":", 2)
            enrollment = enrollments.get(sequence_id)
            if enrollment is not None and enrollment.waits_for(int(generation), step_id):
                held[touch_id(sequence_id, int(generation), step_id, lead.id)] = since
            else:
                gone.append(field)
        self.store.leads.drop_held(lead.id, *gone)
        return held

    def _older_touch_due(self, touch: Touch, lead: LeadRecord, now: datetime) -> bool:
        """Whether a touch of this lead held back before this one fell due is due now."""
        if not lead.held():
            return False  # the usual case: nothing held back, no extra work
        held = self._held(lead)
        mine = (held.get(touch.member, touch.due), touch.member)
        return any(
            (since, member) < mine and self.store.schedule.due_or_claimed(member, now.timestamp())
            for member, since in held.items()
        )

    def _hold_back(
        self, touch: Touch, sequence: Sequence, zone: ZoneInfo, free_at: datetime, note: str
    ) -> None:
        """Move a touch the frequency cap holds back to the first moment the cap allows.

        The touches of one lead held back together all wait for the same moment (the
        end of the cap, or the next opening of the send window), and touches falling due
        at that moment join them. They are laid out a second apart in the order they
        first fell due, so they go out in that order (not in the order of their ids):
        the first goes, the others are held back again and keep their places.
        """
        ref = TouchRef.parse(touch.member)
        self.store.leads.mark_held(ref.lead_id, ref.ledger_field, touch.due)
        slot = open_slot(sequence, free_at, zone).timestamp()
        with self.store.leads.lock(ref.lead_id):
            lead = self.store.leads.get(ref.lead_id)
            held = self._held(lead) if lead is not None else {}
            others = [
                member
                for seq, enrollment in self.store.enrolled.all(ref.lead_id).items()
                if (member := enrollment.pending_touch(seq, ref.lead_id)) is not None
                and member != touch.member
            ]
            queue = [(held.get(touch.member, touch.due), touch.member)]
            for member, score in zip(others, self.store.schedule.due_at(others), strict=True):
                if score is not None and slot <= score < slot + len(others) + 1:
                    queue.append((held.get(member, score), member))
            moves = {member: slot + offset for offset, (_, member) in enumerate(sorted(queue))}
            self.store.schedule.reschedule(touch.member, moves.pop(touch.member), note)
            self.store.schedule.move_if_scheduled(moves)

    # -- delivery -----------------------------------------------------------------

    def _message(
        self, job: _Pending, template: str, unsubscribe_url: str
    ) -> tuple[Message, tuple[str, ...]]:
        """Render the step's email for the lead: the message and the content ids it uses.

        Raises:
            RenderError: When the template does not render for this lead.
        """
        lead, ref = job.lead, job.ref
        context: dict[str, Any] = {
            "lead": lead.data,
            "event": job.enrollment.trigger,
            "sequence": {"id": job.sequence.id, "description": job.sequence.description},
            "step": {"id": ref.step},
            "unsubscribe_url": unsubscribe_url,
            "postal_address": self.settings.postal_address,
        }
        renderer = self.catalog().renderer
        email = renderer.render(template, lead.data.get("locale"), context, job.received)
        message = Message(
            key=job.touch.member.replace("\x1f", "."),
            to_email=str(lead.data["email"]),
            to_name=" ".join(
                str(lead.data[k]) for k in ("first_name", "last_name") if lead.data.get(k)
            )
            or None,
            from_email=self.settings.from_email,
            from_name=self.settings.from_name,
            subject=email.subject,
            text=email.text,
            html=email.html,
            unsubscribe_url=unsubscribe_url,
            lead_id=ref.lead_id,
            sequence=job.sequence.id,
            step=ref.step,
            categories=(job.sequence.id,),
        )
        return message, tuple(email.content_ids)

    def _deliver(self, job: _Pending, template: str, previous: str) -> TouchOutcome:
        """Render and send a reserved touch, and record the outcome."""
        member, stamp = job.touch.member, job.now.timestamp()
        ledger, step_id = self.store.ledger, job.ref.step
        try:
            unsubscribe_url = self.unsubscribe_url(job.ref.lead_id)
            message, content_ids = self._message(job, template, unsubscribe_url)
        except RenderError as exc:
            ledger.release(member, LedgerState.DEAD.at(stamp), stamp, previous)
            self.store.dead.add("touch", f"render failed: {exc}", {"touch": member})
            self.store.counters.count(job.sequence.id, step_id, "failed")
            note = self._note(job, Kind.TOUCH, outcome="failed", detail=f"render failed: {exc}")
            return self._finish(job, "", TouchOutcome.FAILED, note=note)
        delivery = self.delivery()
        try:
            result = delivery.send(message)
        except TransientDeliveryError as exc:
            ledger.release(member, LedgerState.RETRY.at(stamp), stamp, previous)
            return self._retry(job, exc, message.to_email)
        except PermanentDeliveryError as exc:
            ledger.release(member, LedgerState.DEAD.at(stamp), stamp, previous)
            self.store.dead.add("touch", f"refused by {delivery.name}: {exc}", {"touch": member})
            self.store.counters.count(job.sequence.id, step_id, "failed")
            detail = f"refused by {delivery.name}: {exc}"
            note = self._note(job, Kind.TOUCH, outcome="failed", detail=detail)
            return self._finish(job, "", TouchOutcome.FAILED, note=note)
        except OutcomeUnknownError as exc:
            ledger.record_unknown(member, stamp)
            self.store.dead.add("touch", f"outcome unknown, not resent: {exc}", {"touch": member})
            self.store.counters.count(job.sequence.id, step_id, "unknown")
            note = self._note(job, Kind.TOUCH, outcome="unknown", detail=str(exc))
            state = LedgerState.UNKNOWN.at(stamp)
            return self._finish(job, state, TouchOutcome.UNKNOWN, note=note)
        sent = Sent(lateness=stamp - job.touch.due, content_ids=content_ids)
        note = self._note(
            job,
            Kind.TOUCH,
            outcome="sent",
            provider=delivery.name,
            provider_id=result.provider_id,
            subject=message.subject,
        )
        return self._finish(job, LedgerState.SENT.at(stamp), TouchOutcome.SENT, sent, note)

    def _retry(self, job: _Pending, exc: TransientDeliveryError, to_email: str) -> TouchOutcome:
        """A transient failure: try again later, or give up after the last attempt."""
        member, stamp = job.touch.member, job.now.timestamp()
        updated = job.enrollment.retry()
        if updated.attempts >= self.settings.max_attempts:
            self.store.dead.add(
                "touch",
                f"gave up after {updated.attempts} attempts: {exc}",
                {"touch": member, "to": to_email},
            )
            self.store.counters.count(job.sequence.id, job.ref.step, "failed")
            detail = f"gave up after {updated.attempts} attempts: {exc}"
            note = self._note(job, Kind.TOUCH, outcome="failed", detail=detail)
            return self._finish(job, LedgerState.DEAD.at(stamp), TouchOutcome.FAILED, note=note)
        retry_at = job.now + timedelta(seconds=backoff(updated.attempts, exc.retry_after))
        note = self._note(
            job, Kind.TOUCH, outcome="retry", detail=str(exc), until=retry_at.timestamp()
        )
        # Conditional, like any advance: if the lead replied (or a duplicate moved
        # the enrollment on) meanwhile, that wins and the touch is simply dropped.
        self.store.ledger.advance(member, "", updated, (member, retry_at.timestamp()), note=note)
        self.store.counters.count(job.sequence.id, job.ref.step, "retried")
        return TouchOutcome.RETRY

    # -- moving the enrollment on -------------------------------------------------

    def _note(self, job: _Pending, kind: Kind, **data: Any) -> str:
        """A timeline entry about this touch (written by the call that records it)."""
        ref = job.ref
        return entry(
            kind,
            job.now.timestamp(),
            sequence=ref.sequence,
            step=ref.step,
            due=job.touch.due,
            **data,
        )

    def _exit(
        self,
        touch: Touch,
        enrollment: Enrollment,
        reason: ExitReason,
        outcome: TouchOutcome,
        now: datetime,
    ) -> TouchOutcome:
        """End the enrollment (if it still waits for this touch)."""
        ref = TouchRef.parse(touch.member)
        note = entry(
            Kind.EXITED, now.timestamp(), sequence=ref.sequence, step=ref.step, reason=reason.text
        )
        self.store.ledger.advance(touch.member, "", enrollment.exit(reason), None, note=note)
        return outcome

    def _finish(
        self,
        job: _Pending,
        ledger_state: str,
        outcome: TouchOutcome,
        sent: Sent | None = None,
        note: str = "",
    ) -> TouchOutcome:
        """Record the outcome and schedule the next step (or finish the enrollment)."""
        sequence, enrollment, ref = job.sequence, job.enrollment, job.ref
        done = [*enrollment.done, ref.step]
        position = sequence.index_of(ref.step)
        if position is None:
            # The step was removed: continue after the last step passed that still exists.
            known = [i for i in (sequence.index_of(s) for s in done) if i is not None]
            position = max(known) if known else -1
        next_step = next((s for s in sequence.steps[position + 1 :] if s.id not in done), None)
        next_id = next_step.id if next_step else None
        if outcome is TouchOutcome.SKIPPED:
            updated = enrollment.skip(next_id)
        else:
            updated = enrollment.advance(next_id)
        next_touch = None
        if next_step is not None:
            member = touch_id(sequence.id, ref.generation, next_step.id, ref.lead_id)
            due = due_time(sequence, next_step, job.now, job.zone, member)
            next_touch = (member, due.timestamp())
        self.store.ledger.advance(job.touch.member, ledger_state, updated, next_touch, sent, note)
        return outcome
