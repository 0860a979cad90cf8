"""Send due touches: check the enrollment, the step's condition, the send window and
the frequency cap; reserve the send in the ledger; render; deliver; record and move on.

The ledger makes each (enrollment, step) produce at most one email, however often
the queue delivers the message: a retry after a crash never sends again, and a send
whose outcome is unknown is recorded for the operator instead of being repeated.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import redis

from worker.catalog import LoadedCatalog
from worker.clock import Clock
from worker.delivery import Delivery, Message, SendResult
from worker.delivery.base import unsubscribe_mailto
from worker.enrollment import (
    DISQUALIFIED,
    SEQUENCE_REMOVED,
    Enrollment,
    ExitKind,
    ExitReason,
    TouchRef,
    touch_id,
)
from worker.errors import (
    AccountFaultError,
    ContentExhaustedError,
    DeliveryError,
    PermanentDeliveryError,
    RenderError,
    TransientDeliveryError,
)
from worker.lead_history import when_refusal
from worker.reach import Reach, notify_message, webhook_call
from worker.senders import SenderDefaults, resolve
from worker.sequences import Sequence, condition_context
from worker.sequences.engagement import ENGAGEMENT, Engagement
from worker.sequences.model import Step
from worker.sequences.variants import Variant, assign, auto_winner, variant_report
from worker.store import (
    Advance,
    LeadRecord,
    LedgerState,
    Reservation,
    Reserve,
    Sent,
    Store,
    TouchState,
    Verdict,
)
from worker.store.counters import report_groups
from worker.store.leads import LAST_TOUCH
from worker.store.pauses import PauseState
from worker.store.timeline import Kind, entry
from worker.timing import due_time, lead_zone, open_slot
from worker.webhooks import WebhookCall, post_many

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
    PAUSED = "paused"  # delivery or the sequence is paused: the touch keeps its due time


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
    #: From, Reply-To and signature settings (None: only ``from_email``/``from_name``).
    sender: SenderDefaults | None = None
    #: ``NURTURE_UNSUBSCRIBE_MAILBOX``: a ``mailto:`` in ``List-Unsubscribe`` too.
    unsubscribe_mailbox: str | None = None
    #: Where notify steps go and how webhook steps post.
    reach: Reach = dataclass_field(default_factory=Reach)

    def sender_defaults(self) -> SenderDefaults:
        """The sender settings, built from ``from_email``/``from_name`` when not given."""
        return self.sender or SenderDefaults(self.from_email, self.from_name)


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
    engagement: Engagement
    variant: Variant | None = None


@dataclass(frozen=True)
class _Claim:
    """A touch that passed its checks: to be reserved in the ledger, then rendered."""

    pending: _Pending
    template: str
    capped: bool

    def reserve(self, cap_seconds: float, stale_after: float) -> Reserve:
        """The ledger reservation it asks for."""
        job = self.pending
        return Reserve(
            job.touch.member,
            job.lead.email or "",
            job.now.timestamp(),
            cap_seconds,
            self.capped,
            stale_after,
        )


@dataclass(frozen=True)
class _Ready:
    """A touch reserved in the ledger and rendered: waiting for delivery."""

    pending: _Pending
    message: Message | WebhookCall  # a webhook step's signed POST
    content_ids: tuple[str, ...]
    previous: str  # the lead's last touch before this reservation (restored on release)
    resend: bool = False  # nurture retry: the enrollment has moved on and stays put


class _Deferred:
    """The ledger advances a thread collected while recording a round, by index."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Advance]] = []
        self.current = 0

    def drop(self, index: int) -> None:
        """Forget what a touch whose recording failed half-way collected."""
        self.calls = [(i, call) for i, call in self.calls if i != index]


def _rounds(touches: list[Touch]) -> list[list[Touch]]:
    """Split a batch so no round holds two touches of one lead (order kept)."""
    rounds: list[list[Touch]] = []
    taken: list[set[str]] = []
    for touch in touches:
        lead = TouchRef.parse(touch.member).lead_id
        index = next((i for i, leads in enumerate(taken) if lead not in leads), len(rounds))
        if index == len(rounds):
            rounds.append([])
            taken.append(set())
        rounds[index].append(touch)
        taken[index].add(lead)
    return rounds


#: What the one INFO line per touch says for each outcome; outcomes that only move a
#: touch in time (window, cap, busy) are logged at DEBUG, as they repeat.
_SAID = {
    TouchOutcome.SENT: "sent",
    TouchOutcome.SKIPPED: "skipped: the step's `when` is false (or the step was removed)",
    TouchOutcome.SUPPRESSED: "not sent: the address is suppressed; enrollment ended",
    TouchOutcome.EXITED: "not sent: the sequence was removed or the lead disqualified",
    TouchOutcome.FAILED: "failed: kept as a dead letter (nurture dead-letters)",
    TouchOutcome.UNKNOWN: "outcome unknown: not resent (nurture status)",
    TouchOutcome.PAUSED: "waiting: delivery or the sequence is paused (nurture status)",
    TouchOutcome.RETRY: "not sent yet: a transient failure; tried again later",
    TouchOutcome.ERROR: "failed unexpectedly: kept as a dead letter",
}


def _log_outcome(touch: Touch, outcome: TouchOutcome) -> None:
    """One concise line per touch processed (JSON fields with NURTURE_LOG_FORMAT=json)."""
    said = _SAID.get(outcome)
    level = logging.INFO if said is not None else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    ref = TouchRef.parse(touch.member)
    log.log(
        level,
        "%s/%s lead %s: %s",
        ref.sequence,
        ref.step,
        ref.lead_id,
        said or outcome.value,
        extra={
            "sequence": ref.sequence,
            "step": ref.step,
            "lead_id": ref.lead_id,
            "outcome": outcome.value,
        },
    )


def _recipient(message: Message | WebhookCall) -> str:
    """Who a touch was for, in a dead letter: the address, or the webhook's URL."""
    return message.to_email if isinstance(message, Message) else message.url


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
        # While a thread records a round's outcomes, its ledger advances are collected
        # here and written in one round trip (see _deliver_all).
        self._local = threading.local()

    def send_batch(self, touches: list[Touch]) -> dict[str, int]:
        """Process a batch of touches; one bad touch never stops the others.

        The waiting for the provider overlaps: the touches are checked, reserved in the
        ledger and rendered; the reserved messages are delivered together
        (:meth:`~worker.delivery.Delivery.send_many`, many requests in flight); then each
        outcome is recorded on its own. A lead's second touch in the batch waits for a
        later round: what its first one sends (the content the lead received, the cap)
        must be recorded before the second is rendered. The batch is one queue message
        (at most ``Tuning.touches_per_message`` touches), which bounds its memory.

        Raises:
            redis.RedisError: After the touches already reserved were delivered and
                recorded (as far as Redis allows): the queue retries the message and
                the ledger keeps it from sending anything twice.
        """
        outcomes: dict[str, int] = {}
        for round_ in _rounds(touches):
            for outcome, count in self._send_round(round_).items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        return outcomes

    def _send_round(self, touches: list[Touch]) -> dict[str, int]:
        """Check, reserve and render, deliver together, record: touches of distinct
        leads. The store work is done per round, not per touch: the touches' state and
        the pauses are read in two round trips, the reservations made in one, and the
        outcomes recorded in one (pipelines of the per-lead scripts)."""
        outcomes: dict[str, int] = {}
        prepared: list[TouchOutcome | _Ready | _Claim] = []
        failure: redis.RedisError | None = None
        # A Redis failure in these two reads: nothing reserved yet.
        states = self._read_states(touches)
        pauses = self.store.pauses.state()
        for touch in touches:
            try:
                prepared.append(self._prepare(touch, states[touch.member], pauses))
            except redis.RedisError as exc:
                # Stop here; what passed its checks is still reserved, sent and recorded.
                failure = exc
                break
            except Exception as exc:
                prepared.append(self._unexpected(touch, exc))
        ready: list[_Ready] = []
        for touch, item in zip(touches, self._reserve_all(prepared), strict=False):
            if isinstance(item, redis.RedisError):
                failure = failure or item
            elif isinstance(item, _Ready):
                ready.append(item)
            else:
                outcomes[item] = outcomes.get(item, 0) + 1
                _log_outcome(touch, item)
        for job, outcome in zip(ready, self._deliver_all(ready), strict=True):
            if isinstance(outcome, redis.RedisError):
                failure = failure or outcome
            else:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                _log_outcome(job.pending.touch, outcome)
        if failure is not None:
            raise failure  # the queue retries the message; the ledger prevents duplicates
        return outcomes

    def send(self, touch: Touch) -> TouchOutcome:
        """Process one touch; returns what happened."""
        prepared = self._prepare(touch)
        if isinstance(prepared, _Claim):
            cap, timeout = self.settings.frequency_cap, self.settings.send_timeout
            reservation = self.store.ledger.reserve(**vars(prepared.reserve(cap, timeout)))
            prepared = self._reserved(prepared, reservation)
        if not isinstance(prepared, _Ready):
            return prepared
        (result,) = self._hand_over([prepared])
        return self._record(prepared, result)

    def _reserve_all(
        self, prepared: list[TouchOutcome | _Ready | _Claim]
    ) -> list[TouchOutcome | _Ready | redis.RedisError]:
        """Reserve the claims among ``prepared`` in one round trip and render them.

        When the round trip fails, none of them is sent: the reservations it may have
        made are undone (only ours, :meth:`Ledger.release`), as far as Redis allows, and
        the error takes each claim's place (the queue retries the message).
        """
        claims = [item for item in prepared if isinstance(item, _Claim)]
        if not claims:
            return [item for item in prepared if not isinstance(item, _Claim)]
        cap, timeout = self.settings.frequency_cap, self.settings.send_timeout
        try:
            reservations = self.store.ledger.reserve_many([c.reserve(cap, timeout) for c in claims])
        except redis.RedisError as exc:
            self._undo_reservations(claims)
            reservations = [exc] * len(claims)
        verdicts = iter(reservations)
        done: list[TouchOutcome | _Ready | redis.RedisError] = []
        for item in prepared:
            if not isinstance(item, _Claim):
                done.append(item)
                continue
            reservation = next(verdicts)
            try:
                if isinstance(reservation, redis.RedisError):
                    raise reservation
                done.append(self._reserved(item, reservation))
            except redis.RedisError as exc:
                done.append(exc)
            except Exception as exc:
                done.append(self._unexpected(item.pending.touch, exc))
        return done

    def _undo_reservations(self, claims: list[_Claim]) -> None:
        """Best effort after a failed reservation round trip: release whatever of it
        was made (nothing was sent). The cap's clock goes back to what was read for the
        lead this round (the script restores it only where our reservation set it)."""
        for claim in claims:
            job = claim.pending
            stamp = job.now.timestamp()
            previous = job.lead.flags.get(LAST_TOUCH, "")
            try:
                self.store.ledger.release(
                    job.touch.member, LedgerState.RETRY.at(stamp), stamp, previous
                )
            except redis.RedisError:
                return  # still down: the retry finds them busy, then outcome unknown

    def _read_states(self, touches: list[Touch]) -> dict[str, TouchState]:
        """What each touch's checks read (touches of distinct leads): one round trip."""
        refs = [TouchRef.parse(touch.member) for touch in touches]
        states = self.store.enrolled.touch_states([(r.lead_id, r.sequence) for r in refs])
        return {touch.member: state for touch, state in zip(touches, states, strict=True)}

    def _deliver_all(self, ready: list[_Ready]) -> list[TouchOutcome | redis.RedisError]:
        """Deliver reserved touches together, then record each outcome on its own.

        The records' final step, the ledger's ``advance`` of each touch, is collected
        and written for all of them in one round trip (each still atomic on its own).
        A Redis failure while recording one touch does not stop recording the others
        (their emails are out); it is returned in that touch's place.
        """
        if not ready:
            return []
        results = self._hand_over(ready)
        outcomes: list[TouchOutcome | redis.RedisError] = []
        deferred = self._local.deferred = _Deferred()
        try:
            for index, (job, result) in enumerate(zip(ready, results, strict=True)):
                deferred.current = index
                try:
                    outcomes.append(self._record(job, result))
                except redis.RedisError as exc:
                    deferred.drop(index)
                    outcomes.append(exc)
                except Exception as exc:
                    deferred.drop(index)
                    log.exception("touch %r failed unexpectedly", job.pending.touch.member)
                    self.store.dead.add(
                        "touch", f"unexpected error: {exc!r}", {"touch": job.pending.touch.member}
                    )
                    outcomes.append(TouchOutcome.ERROR)
        finally:
            self._local.deferred = None
        for index, error in self._advance_deferred(deferred):
            outcomes[index] = error
        return outcomes

    def _advance_deferred(self, deferred: _Deferred) -> list[tuple[int, redis.RedisError]]:
        """Write the collected advances in one round trip; the failed ones, by index."""
        if not deferred.calls:
            return []
        try:
            moved = self.store.ledger.advance_many([call for _, call in deferred.calls])
        except redis.RedisError as exc:
            return [(index, exc) for index, _ in deferred.calls]
        return [
            (index, result)
            for (index, _), result in zip(deferred.calls, moved, strict=True)
            if isinstance(result, redis.RedisError)
        ]

    def _hand_over(self, ready: list[_Ready]) -> list[SendResult | DeliveryError]:
        """Emails (to leads and notify) go out together through the delivery backend,
        webhook calls together over their own threads. One result per touch, in order."""
        emails = [job.message for job in ready if isinstance(job.message, Message)]
        calls = [job.message for job in ready if isinstance(job.message, WebhookCall)]
        sent = iter(self.delivery().send_many(emails) if emails else [])
        posted = iter(post_many(calls, self.settings.reach.webhook_timeout))
        return [next(sent if isinstance(job.message, Message) else posted) for job in ready]

    def _unexpected(self, touch: Touch, exc: Exception) -> TouchOutcome:
        """A bug or bad data while preparing one touch: dead-letter it, keep going."""
        log.exception("touch %r failed unexpectedly", touch.member)
        self.store.dead.add("touch", f"unexpected error: {exc!r}", {"touch": touch.member})
        self.store.schedule.release_claim(touch.member)
        return TouchOutcome.ERROR

    def _prepare(
        self, touch: Touch, state: TouchState | None = None, pauses: PauseState | None = None
    ) -> TouchOutcome | _Ready | _Claim:
        """Check one touch: its outcome, or a claim to reserve (:meth:`_reserved` then
        renders it), or (``nurture retry``) a message ready to go.

        Args:
            touch: The claimed touch.
            state: What was read for it ahead (:meth:`_read_states`); None reads it now.
            pauses: The pauses, read once for the batch; None reads them now.
        """
        ref = TouchRef.parse(touch.member)
        now = self.clock.now()
        if state is None:
            state = self.store.enrolled.touch_state(ref.lead_id, ref.sequence)
        if pauses is None:
            pauses = self.store.pauses.state()
        lead, enrollment = state.lead, state.enrollment
        if lead is None or enrollment is None or not enrollment.waits_for(ref.generation, ref.step):
            if lead is not None and enrollment is not None and self._reopened(touch.member):
                return self._resend(touch, ref, lead, enrollment, state, pauses)
            self.store.schedule.release_claim(touch.member)
            return TouchOutcome.STALE
        sequence = self.catalog().catalog.sequences.get(ref.sequence)
        if self._paused(touch, sequence, pauses):
            return TouchOutcome.PAUSED
        if sequence is None:
            # Live edit removed the sequence: end its enrollments cleanly.
            return self._exit(touch, enrollment, SEQUENCE_REMOVED, TouchOutcome.EXITED, now)
        if lead.disqualified and sequence.kind == "nurture":
            return self._exit(touch, enrollment, DISQUALIFIED, TouchOutcome.EXITED, now)
        zone = lead_zone(lead.data, self.settings.default_timezone)
        engagement = Engagement.from_fields(
            sequence.id,
            ref.generation,
            state.engagement,
            lead.seen("lead.replied"),
            enrollment.started,
        )
        job = _Pending(
            touch, ref, sequence, enrollment, lead, now, zone, state.received, engagement
        )
        step = sequence.step(ref.step)
        if step is None:
            # Live edit removed the step: skip it, keep the lead's place in the sequence.
            note = self._note(job, Kind.SKIP, reason="step removed from the sequence")
            return self._finish(job, "", TouchOutcome.SKIPPED, note=note)
        context = condition_context(lead.data, enrollment.trigger.get("data"))
        context[ENGAGEMENT] = engagement
        if sequence.exit_when is not None and sequence.exit_when.matches(context):
            reason = ExitReason(ExitKind.EXIT_ON, "condition")
            return self._exit(touch, enrollment, reason, TouchOutcome.EXITED, now)
        if step.when is not None and not step.when.matches(context):
            # The rule's fingerprint and the values it read, rendered by ``nurture lead``
            # (worker/lead_history.py); a rule on engagement, in words.
            if step.when.uses_engagement:
                why = {"detail": f"when: {step.when.failing(context)}"}
            else:
                why = when_refusal(step.when, context, every_path=True)
            note = self._note(job, Kind.SKIP, reason="condition", **why)
            return self._finish(job, "", TouchOutcome.SKIPPED, note=note)
        slot = open_slot(sequence, now, zone)
        if slot > now:
            note = self._note(job, Kind.SKIP, reason="send window", until=slot.timestamp())
            self.store.schedule.reschedule(touch.member, slot.timestamp(), note)
            return TouchOutcome.WINDOW
        if step.variants:
            job = replace(job, variant=self._variant(step, sequence.id, ref.lead_id))
        template = job.variant.template if job.variant and job.variant.template else step.template
        # Notify and webhook steps reach people inside, not the lead: outside the cap.
        to_lead = step.channel == "email"
        capped = job.sequence.kind == "nurture" and self.settings.frequency_cap > 0 and to_lead
        if capped and self._older_touch_due(touch, job.lead, now):
            # A touch of this lead held back before this one fell due is due now too: it
            # goes first, and this one looks again a second later (keeping its place).
            self.store.leads.mark_held(ref.lead_id, ref.ledger_field, touch.due)
            self.store.schedule.reschedule(touch.member, now.timestamp() + 1)
            return TouchOutcome.CAPPED
        return _Claim(job, template, capped)

    def _variant(self, step: Step, sequence: str, lead_id: str) -> Variant:
        """The lead's A/B variant of a step (the settled winner under ``winner: auto``)."""
        if step.winner_auto:
            stats = self.store.conversions.sequence_stats(sequence)
            ids = [v.id for v in step.variants]
            winner = auto_winner(variant_report(step.id, ids, stats))
            if winner is not None:
                return next(v for v in step.variants if v.id == winner)
        return assign(step.variants, lead_id, sequence, step.id)

    def _reserved(self, claim: _Claim, reservation: Reservation) -> TouchOutcome | _Ready:
        """Act on the ledger's verdict (with the frequency cap) on a claim; render it
        when reserved."""
        job, template = claim.pending, claim.template
        touch, ref, now = job.touch, job.ref, job.now
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
                return self._render(job, template, reservation.previous_touch)

    def _paused(self, touch: Touch, sequence: Sequence | None, pauses: PauseState) -> bool:
        """Put the touch aside when delivery or its sequence is paused.

        Delivery paused (an account fault): back on the schedule at its due time, where
        schedulers leave it until the pause ends. Sequence paused (``paused: true`` or
        ``nurture pause``): parked with its due time until the sequence is resumed.
        ``pauses`` is read once per round of a batch, not per touch.
        """
        if pauses.delivery is not None:
            self.store.schedule.reschedule(touch.member, touch.due)
            return True
        if sequence is not None and (sequence.paused or pauses.sequence_paused(sequence.id)):
            self.store.schedule.park(touch.member, touch.due)
            return True
        return False

    # -- an operator's retry of a failed touch (nurture retry) --------------------

    def _reopened(self, member: str) -> bool:
        """Whether ``nurture retry`` reopened this (failed, passed) touch."""
        state = self.store.ledger.state(member) or ""
        return state.startswith(f"{LedgerState.RETRY.value}:")

    def _resend(
        self,
        touch: Touch,
        ref: TouchRef,
        lead: LeadRecord,
        enrollment: Enrollment,
        state: TouchState,
        pauses: PauseState,
    ) -> TouchOutcome | _Ready:
        """Send a failed touch again for ``nurture retry``, through the ledger.

        The enrollment has moved on past the step and stays where it is; the ledger
        (reserved with ``resend``) still makes this at most one email. Checks the step
        and the window like any touch, but not the frequency cap: the operator asked.
        """
        now = self.clock.now()
        sequence = self.catalog().catalog.sequences.get(ref.sequence)
        if self._paused(touch, sequence, pauses):
            return TouchOutcome.PAUSED
        step = sequence.step(ref.step) if sequence is not None else None
        if sequence is None or step is None:
            self.store.schedule.release_claim(touch.member)
            return TouchOutcome.STALE
        zone = lead_zone(lead.data, self.settings.default_timezone)
        slot = open_slot(sequence, now, zone)
        if slot > now:
            self.store.schedule.reschedule(touch.member, slot.timestamp())
            return TouchOutcome.WINDOW
        reservation = self.store.ledger.reserve(
            touch.member, lead.email or "", now.timestamp(), 0, False, 0, resend=True
        )
        if reservation.verdict is not Verdict.OK:
            self.store.schedule.release_claim(touch.member)
            return (
                TouchOutcome.DUPLICATE
                if reservation.verdict is Verdict.DONE
                else (TouchOutcome.STALE)
            )
        engagement = Engagement.from_fields(
            sequence.id,
            ref.generation,
            state.engagement,
            lead.seen("lead.replied"),
            enrollment.started,
        )
        job = _Pending(
            touch, ref, sequence, enrollment, lead, now, zone, state.received, engagement
        )
        return self._render(job, step.template, reservation.previous_touch, resend=True)

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
            ContentExhaustedError: A ``needs_content`` step found no new piece.
        """
        lead, ref = job.lead, job.ref
        who = resolve(self.settings.sender_defaults(), job.sequence.sender, lead.data)
        context: dict[str, Any] = {
            "lead": lead.data,
            "event": job.enrollment.trigger,
            "sequence": {"id": job.sequence.id, "description": job.sequence.description},
            "step": {"id": ref.step},
            "unsubscribe_url": unsubscribe_url,
            "postal_address": self.settings.postal_address,
            "sender": who.signature.as_context(),
        }
        renderer = self.catalog().renderer
        email = renderer.render(
            template,
            lead.data.get("locale"),
            context,
            job.received,
            preferred=job.engagement.clicked_tags(),
        )
        step = job.sequence.step(ref.step)
        if step is not None and step.needs_content and email.found_nothing:
            language = lead.data.get("locale") or renderer.default_locale
            raise ContentExhaustedError(f"no piece left in {language!s} the lead has not had")
        message = Message(
            key=job.touch.member.replace("\x1f", "."),
            to_email=str(lead.data["email"]),
            to_name=" ".join(
                str(lead.data[k]) for k in ("first_name", "last_name") if lead.data.get(k)
            )
            or None,
            from_email=who.from_.email,
            from_name=who.from_.name,
            subject=email.subject,
            text=email.text,
            html=email.html,
            unsubscribe_url=unsubscribe_url,
            lead_id=ref.lead_id,
            sequence=job.sequence.id,
            step=ref.step,
            categories=(job.sequence.id,),
            reply_to_email=who.reply_to.email if who.reply_to else None,
            reply_to_name=who.reply_to.name if who.reply_to else None,
            track_opens=job.sequence.tracking.opens,
            track_clicks=job.sequence.tracking.clicks,
            unsubscribe_mailto=(
                unsubscribe_mailto(self.settings.unsubscribe_mailbox, unsubscribe_url)
                if self.settings.unsubscribe_mailbox
                else None
            ),
            generation=ref.generation,
            variant=job.variant.id if job.variant else "",
        )
        if job.variant is not None and job.variant.subject:
            message = replace(message, subject=job.variant.subject.strip())
        return message, tuple(email.content_ids)

    def _reach(self, job: _Pending, step: Step) -> Message | WebhookCall:
        """A notify step's internal email or a webhook step's signed POST.

        Raises:
            RenderError: When it cannot be built (template, unconfigured target).
        """
        key = job.touch.member.replace("\x1f", ".")
        lead, trigger = job.lead.data, job.enrollment.trigger
        if step.notify is not None:
            renderer, defaults = self.catalog().renderer, self.settings.sender_defaults()
            return notify_message(
                renderer, job.sequence, step, lead, trigger, self.settings.reach, defaults, key
            )
        reach, generation = self.settings.reach, job.ref.generation
        return webhook_call(job.sequence, step, lead, trigger, reach, key, generation, job.now)

    def _render(
        self, job: _Pending, template: str, previous: str, *, resend: bool = False
    ) -> TouchOutcome | _Ready:
        """Render a reserved touch; a template that does not render releases it as dead."""
        member, stamp = job.touch.member, job.now.timestamp()
        message: Message | WebhookCall
        content_ids: tuple[str, ...] = ()
        try:
            step = job.sequence.step(job.ref.step)
            if step is not None and step.channel != "email":
                message = self._reach(job, step)
            else:
                unsubscribe_url = self.unsubscribe_url(job.ref.lead_id)
                message, content_ids = self._message(job, template, unsubscribe_url)
        except ContentExhaustedError as exc:
            self.store.ledger.release(member, LedgerState.SKIPPED.at(stamp), stamp, previous)
            if resend:
                return TouchOutcome.SKIPPED
            reason = ExitReason(ExitKind.CONTENT_EXHAUSTED, str(exc))
            return self._exit(job.touch, job.enrollment, reason, TouchOutcome.EXITED, job.now)
        except RenderError as exc:
            self.store.ledger.release(member, LedgerState.DEAD.at(stamp), stamp, previous)
            self.store.dead.add("touch", f"render failed: {exc}", {"touch": member})
            self.store.counters.count(job.sequence.id, job.ref.step, "failed")
            note = self._note(job, Kind.TOUCH, outcome="failed", detail=f"render failed: {exc}")
            return self._finish(job, "", TouchOutcome.FAILED, note=note)
        return _Ready(job, message, content_ids, previous, resend)

    def _record(self, ready: _Ready, result: SendResult | DeliveryError) -> TouchOutcome:
        """Record what delivery did with one reserved touch (the one place per outcome).

        Args:
            ready: The reserved, rendered touch.
            result: The backend's result for its message, or the classified error.
        """
        job, previous = ready.pending, ready.previous
        member, stamp = job.touch.member, job.now.timestamp()
        ledger, step_id = self.store.ledger, job.ref.step
        name = self.delivery().name
        if isinstance(result, AccountFaultError | TransientDeliveryError | PermanentDeliveryError):
            # Certainly not sent: undo our reservation, unless it outlived the send timeout
            # and another worker already recorded the touch (outcome unknown, moved on).
            after = LedgerState.DEAD if isinstance(result, PermanentDeliveryError) else None
            state = (after or LedgerState.RETRY).at(stamp)
            if not ledger.release(member, state, stamp, previous):
                return TouchOutcome.STALE
        if isinstance(result, AccountFaultError):
            return self._account_fault(ready, result)
        if isinstance(result, TransientDeliveryError):
            if ready.resend:
                self.store.schedule.reschedule(member, stamp + backoff(1, result.retry_after))
                return TouchOutcome.RETRY
            return self._retry(job, result, _recipient(ready.message))
        if isinstance(result, PermanentDeliveryError):
            self.store.dead.add("touch", f"refused by {name}: {result}", {"touch": member})
            self.store.counters.count(job.sequence.id, step_id, "failed")
            detail = f"refused by {name}: {result}"
            note = self._note(job, Kind.TOUCH, outcome="failed", detail=detail)
            return self._finish(job, "", TouchOutcome.FAILED, note=note)
        if isinstance(result, DeliveryError):
            # OutcomeUnknownError, or any other delivery error: it may have gone out.
            ledger.record_unknown(member, stamp)
            self.store.dead.add(
                "touch", f"outcome unknown, not resent: {result}", {"touch": member}
            )
            self.store.counters.count(job.sequence.id, step_id, "unknown")
            note = self._note(job, Kind.TOUCH, outcome="unknown", detail=str(result))
            state = LedgerState.UNKNOWN.at(stamp)
            return self._finish(job, state, TouchOutcome.UNKNOWN, note=note)
        if job.variant is not None:
            self.store.conversions.record_variant(
                job.ref.lead_id, job.sequence.id, job.ref.generation, step_id, job.variant.id
            )
        sent, note = self._sent(ready, result, name)
        if ready.resend:
            # The enrollment no longer waits for this step, so advance records the
            # ledger entry, counters and content and leaves the enrollment as it is.
            state = LedgerState.SENT.at(stamp)
            self._advance(Advance(member, state, job.enrollment, None, sent, note))
            return TouchOutcome.SENT
        return self._finish(job, LedgerState.SENT.at(stamp), TouchOutcome.SENT, sent, note)

    def _sent(self, ready: _Ready, result: SendResult, name: str) -> tuple[Sent, str]:
        """What a delivered touch counts and records: an email to the lead is ``sent``;
        a notify is ``notified`` (to whom), a webhook ``posted`` (where): neither is an
        email in the lead's funnel."""
        job, message = ready.pending, ready.message
        stamp = job.now.timestamp()
        lateness = stamp - job.touch.due
        groups = report_groups(job.lead.data, job.variant.id if job.variant else "")
        if isinstance(message, WebhookCall):
            note = self._note(
                job, Kind.TOUCH, outcome="posted", url=message.url, provider_id=result.provider_id
            )
            return Sent(lateness, counter="posted", at=stamp, groups=groups), note
        if message.internal:
            note = self._note(
                job,
                Kind.TOUCH,
                outcome="notified",
                to=message.to_email,
                provider=name,
                provider_id=result.provider_id,
                subject=message.subject,
            )
            return Sent(lateness, counter="notified", at=stamp, groups=groups), note
        note = self._note(
            job,
            Kind.TOUCH,
            outcome="sent",
            provider=name,
            provider_id=result.provider_id,
            subject=message.subject,
        )
        return Sent(lateness, ready.content_ids, at=stamp, groups=groups), note

    def _account_fault(self, ready: _Ready, exc: AccountFaultError) -> TouchOutcome:
        """Not this message's fault: nothing was sent (the reservation is released), the
        touch keeps its place, and delivery pauses for every worker until a probe finds
        the account working."""
        job = ready.pending
        member, stamp = job.touch.member, job.now.timestamp()
        self.store.schedule.reschedule(member, job.touch.due)
        if self.store.pauses.pause_delivery(str(exc), stamp):
            log.error(
                "delivery paused for all workers: %s; touches keep their place and go "
                "out once the account works again (checked automatically)",
                exc,
            )
        return TouchOutcome.PAUSED

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
        self._advance(Advance(member, "", updated, (member, retry_at.timestamp()), note=note))
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
        self._advance(Advance(touch.member, "", enrollment.exit(reason), None, note=note))
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
        self._advance(Advance(job.touch.member, ledger_state, updated, next_touch, sent, note))
        return outcome

    def _advance(self, call: Advance) -> None:
        """Move the enrollment on now, or, while this thread records a round's outcomes
        (:meth:`_deliver_all`), with the round's other advances in one round trip."""
        deferred: _Deferred | None = getattr(self._local, "deferred", None)
        if deferred is None:
            self.store.ledger.advance(
                call.member,
                call.ledger_state,
                call.enrollment,
                call.next_touch,
                call.sent,
                call.note,
            )
        else:
            deferred.calls.append((deferred.current, call))
