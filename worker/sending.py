"""Send due touches: check the enrollment, the step's condition, the send window and
the frequency cap; reserve the send in the ledger; render; deliver; record and move on.

The ledger makes each (enrollment, step) produce at most one email, however often
the queue delivers the message: a retry after a crash never sends again, and a send
whose outcome is unknown is recorded for the operator instead of being repeated.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from worker.delivery import Message
from worker.errors import (
    OutcomeUnknownError,
    PermanentDeliveryError,
    RenderError,
    TransientDeliveryError,
)
from worker.keys import ledger_field, parse_touch, touch_id
from worker.runtime import Runtime
from worker.sequences import Sequence, condition_context
from worker.store import Enrollment, LeadRecord, Sent
from worker.timing import due_time, lead_zone, open_slot

log = logging.getLogger(__name__)

#: Lead hash field prefix: ``held:<ledger field>`` -> when a touch the frequency cap
#: held back first fell due. It keeps held-back touches in the order they fell due.
HELD = "held:"


@dataclass(frozen=True)
class Touch:
    """One claimed touch: the schedule member and when it was due."""

    member: str
    due: float


def backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds before the next attempt: the provider's word, else exponential with jitter."""
    if retry_after is not None:
        return max(1.0, min(retry_after, 3600.0))
    base: float = min(3600.0, 5.0 * 2**attempt)
    return base * (0.5 + random.random() / 2)


class TouchSender:
    """Processes claimed touches."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.store = runtime.store

    def send_batch(self, touches: list[Touch]) -> dict[str, int]:
        """Process touches one by one; one bad touch never stops the others."""
        outcomes: dict[str, int] = {}
        for touch in touches:
            try:
                outcome = self.send(touch)
            except Exception as exc:
                if _is_redis_error(exc):
                    raise  # the queue retries the message; the ledger prevents duplicates
                log.exception("touch %r failed unexpectedly", touch.member)
                self.store.dead_letter(
                    "touch", f"unexpected error: {exc!r}", {"touch": touch.member}
                )
                self.store.release_claim(touch.member)
                outcome = "error"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    def send(self, touch: Touch) -> str:
        """Process one touch; returns what happened (sent, skipped, stale, ...)."""
        sequence_id, generation, step_id, lead_id = parse_touch(touch.member)
        now = self.rt.clock.now()
        lead, enrollment, received = self.store.touch_state(lead_id, sequence_id)
        if (
            lead is None
            or enrollment is None
            or not enrollment.active
            or enrollment.generation != generation
            or enrollment.step != step_id
        ):
            self.store.release_claim(touch.member)
            return "stale"
        catalog = self.rt.catalog.current.catalog
        sequence = catalog.sequences.get(sequence_id)
        if sequence is None:
            # Live edit removed the sequence: end its enrollments cleanly.
            enrollment.state, enrollment.reason, enrollment.step = (
                "exited",
                "sequence removed",
                None,
            )
            self.store.advance(touch.member, "", enrollment, None)
            return "exited"
        if lead.disqualified and sequence.kind == "nurture":
            enrollment.state, enrollment.reason, enrollment.step = "exited", "disqualified", None
            self.store.advance(touch.member, "", enrollment, None)
            return "exited"
        zone = lead_zone(lead.data, self.rt.settings.default_timezone)
        step = sequence.step(step_id)
        if step is None:
            # Live edit removed the step: skip it, keep the lead's place in the sequence.
            return self._advance(touch, sequence, enrollment, lead, now, "", "skipped")
        context = condition_context(lead.data, enrollment.trigger.get("data"))
        if step.when is not None and not step.when.matches(context):
            return self._advance(touch, sequence, enrollment, lead, now, "", "skipped")
        slot = open_slot(sequence, now, zone)
        if slot > now:
            self.store.reschedule(touch.member, slot.timestamp())
            return "window"
        email = lead.email or ""
        capped = sequence.kind == "nurture" and self.rt.settings.frequency_cap > 0
        if capped and self._older_touch_due(touch, lead, now):
            # A touch of this lead held back before this one fell due is due now too: it
            # goes first, and this one looks again a second later (keeping its place).
            self.store.redis.hsetnx(
                self.store.keys.lead(lead_id),
                HELD + ledger_field(sequence_id, generation, step_id),
                touch.due,
            )
            self.store.reschedule(touch.member, now.timestamp() + 1)
            return "capped"
        reservation = self.store.reserve_send(
            touch.member,
            email,
            now.timestamp(),
            self.rt.settings.frequency_cap,
            capped,
            self.rt.settings.send_timeout,
        )
        verdict = reservation[0]
        if verdict == "stale":
            self.store.release_claim(touch.member)
            return "stale"
        if verdict == "busy":
            return "busy"  # another worker is sending it right now; its lease covers it
        if verdict == "done":
            self.store.release_claim(touch.member)
            return "duplicate"
        if verdict == "unknown":
            self.store.record_unknown(touch.member, now.timestamp())
            self.store.dead_letter(
                "touch",
                "outcome unknown: a worker stopped in the middle of sending; not resent",
                {"touch": touch.member},
            )
            return self._advance(touch, sequence, enrollment, lead, now, "", "unknown")
        if verdict == "suppressed":
            enrollment.state, enrollment.reason, enrollment.step = (
                "exited",
                f"suppressed:{reservation[1]}",
                None,
            )
            self.store.advance(touch.member, "", enrollment, None)
            return "suppressed"
        if verdict == "capped":
            free_at = datetime.fromtimestamp(float(reservation[1]), now.tzinfo)
            self._hold_back(touch, sequence, zone, free_at)
            return "capped"
        held = HELD + ledger_field(sequence_id, generation, step_id)
        if held in lead.flags:
            self.store.redis.hdel(self.store.keys.lead(lead_id), held)
        previous = reservation[1]
        return self._deliver(
            touch, sequence, enrollment, lead, step.template, now, previous, received
        )

    def _held(self, lead: LeadRecord) -> dict[str, float]:
        """The lead's touches held back by the cap and still pending: member -> since.

        Marks of touches no longer pending (their enrollment exited or moved on) are
        dropped on the way.
        """
        marks = {k: float(v) for k, v in lead.flags.items() if k.startswith(HELD)}
        if not marks:
            return {}
        enrollments = self.store.enrollments(lead.id)
        held: dict[str, float] = {}
        gone = []
        for name, since in marks.items():
            sequence_id, generation, step_id = name[len(HELD) :].split(":", 2)
            enrollment = enrollments.get(sequence_id)
            if (
                enrollment is not None
                and enrollment.active
                and str(enrollment.generation) == generation
                and enrollment.step == step_id
            ):
                held[touch_id(sequence_id, int(generation), step_id, lead.id)] = since
            else:
                gone.append(name)
        if gone:
            self.store.redis.hdel(self.store.keys.lead(lead.id), *gone)
        return held

    def _older_touch_due(self, touch: Touch, lead: LeadRecord, now: datetime) -> bool:
        """Whether a touch of this lead held back before this one fell due is due now."""
        if not any(name.startswith(HELD) for name in lead.flags):
            return False  # the usual case: nothing held back, no extra work
        held = self._held(lead)
        mine = (held.get(touch.member, touch.due), touch.member)
        for member, since in held.items():
            if (since, member) >= mine:
                continue
            score = self.store.redis.zscore(self.store.keys.schedule, member)
            if score is not None and score <= now.timestamp():
                return True
            if score is None and self.store.redis.zscore(self.store.keys.claimed, member):
                return True  # claimed: being sent right now
        return False

    def _hold_back(
        self, touch: Touch, sequence: Sequence, zone: ZoneInfo, free_at: datetime
    ) -> None:
        """Move a touch the frequency cap holds back to the first moment the cap allows.

        The touches of one lead held back together all wait for the same moment (the
        end of the cap, or the next opening of the send window), and touches falling due
        at that moment join them. They are laid out a second apart in the order they
        first fell due, so they go out in that order (not in the order of their ids):
        the first goes, the others are held back again and keep their places.
        """
        sequence_id, generation, step_id, lead_id = parse_touch(touch.member)
        lead_key = self.store.keys.lead(lead_id)
        self.store.redis.hsetnx(
            lead_key, HELD + ledger_field(sequence_id, generation, step_id), touch.due
        )
        slot = open_slot(sequence, free_at, zone).timestamp()
        with self.store.lead_lock(lead_id):
            lead = self.store.get_lead(lead_id)
            held = self._held(lead) if lead is not None else {}
            others = [
                touch_id(seq, enrollment.generation, enrollment.step, lead_id)
                for seq, enrollment in self.store.enrollments(lead_id).items()
                if enrollment.active and enrollment.step
            ]
            others = [member for member in others if member != touch.member]
            pipe = self.store.redis.pipeline(transaction=False)
            for member in others:
                pipe.zscore(self.store.keys.schedule, member)
            scores = cast(list[float | None], pipe.execute())
            queue = [(held.get(touch.member, touch.due), touch.member)]
            for member, score in zip(others, scores, strict=True):
                if score is not None and slot <= score < slot + len(others) + 1:
                    queue.append((held.get(member, score), member))
            for offset, (_, member) in enumerate(sorted(queue)):
                if member == touch.member:
                    self.store.reschedule(member, slot + offset)
                else:
                    # XX: only if still waiting (not claimed or cancelled meanwhile).
                    self.store.redis.zadd(
                        self.store.keys.schedule, {member: slot + offset}, xx=True
                    )

    def _deliver(
        self,
        touch: Touch,
        sequence: Sequence,
        enrollment: Enrollment,
        lead: LeadRecord,
        template: str,
        now: datetime,
        previous: str,
        received: frozenset[str],
    ) -> str:
        _, _, step_id, lead_id = parse_touch(touch.member)
        stamp = now.timestamp()
        loaded = self.rt.catalog.current
        unsubscribe_url = self.rt.unsubscribe_url(lead_id)
        context: dict[str, Any] = {
            "lead": lead.data,
            "event": enrollment.trigger,
            "sequence": {"id": sequence.id, "description": sequence.description},
            "step": {"id": step_id},
            "unsubscribe_url": unsubscribe_url,
            "postal_address": self.rt.settings.postal_address or "",
        }
        try:
            email = loaded.renderer.render(template, lead.data.get("locale"), context, received)
        except RenderError as exc:
            self.store.release_send(touch.member, f"dead:{stamp}", stamp, previous)
            self.store.dead_letter("touch", f"render failed: {exc}", {"touch": touch.member})
            self.store.count(sequence.id, step_id, "failed")
            return self._advance(touch, sequence, enrollment, lead, now, "", "failed")
        message = Message(
            key=touch.member.replace("\x1f", "."),
            to_email=str(lead.data["email"]),
            to_name=" ".join(
                str(lead.data[k]) for k in ("first_name", "last_name") if lead.data.get(k)
            )
            or None,
            from_email=self.rt.settings.from_email or "",
            from_name=self.rt.settings.from_name,
            subject=email.subject,
            text=email.text,
            html=email.html,
            unsubscribe_url=unsubscribe_url,
            lead_id=lead_id,
            sequence=sequence.id,
            step=step_id,
            categories=(sequence.id,),
        )
        try:
            self.rt.delivery.send(message)
        except TransientDeliveryError as exc:
            self.store.release_send(touch.member, f"retry:{stamp}", stamp, previous)
            attempts = enrollment.attempts + 1
            if attempts >= self.rt.tuning.max_attempts:
                self.store.dead_letter(
                    "touch",
                    f"gave up after {attempts} attempts: {exc}",
                    {"touch": touch.member, "to": message.to_email},
                )
                self.store.count(sequence.id, step_id, "failed")
                return self._advance(
                    touch, sequence, enrollment, lead, now, f"dead:{stamp}", "failed"
                )
            updated = replace(enrollment, attempts=attempts)
            retry_at = now + timedelta(seconds=backoff(attempts, exc.retry_after))
            # Conditional, like any advance: if the lead replied (or a duplicate moved
            # the enrollment on) meanwhile, that wins and the touch is simply dropped.
            self.store.advance(touch.member, "", updated, (touch.member, retry_at.timestamp()))
            self.store.count(sequence.id, step_id, "retried")
            return "retry"
        except PermanentDeliveryError as exc:
            self.store.release_send(touch.member, f"dead:{stamp}", stamp, previous)
            self.store.dead_letter(
                "touch", f"refused by {self.rt.delivery.name}: {exc}", {"touch": touch.member}
            )
            self.store.count(sequence.id, step_id, "failed")
            return self._advance(touch, sequence, enrollment, lead, now, "", "failed")
        except OutcomeUnknownError as exc:
            self.store.record_unknown(touch.member, stamp)
            self.store.dead_letter(
                "touch", f"outcome unknown, not resent: {exc}", {"touch": touch.member}
            )
            self.store.count(sequence.id, step_id, "unknown")
            return self._advance(
                touch, sequence, enrollment, lead, now, f"unknown:{stamp}", "unknown"
            )
        sent = Sent(lateness=stamp - touch.due, content_ids=tuple(email.content_ids))
        return self._advance(touch, sequence, enrollment, lead, now, f"sent:{stamp}", "sent", sent)

    def _advance(
        self,
        touch: Touch,
        sequence: Sequence,
        enrollment: Enrollment,
        lead: LeadRecord,
        now: datetime,
        ledger_state: str,
        outcome: str,
        sent: Sent | None = None,
    ) -> str:
        """Record the outcome and schedule the next step (or finish the enrollment)."""
        _, generation, step_id, lead_id = parse_touch(touch.member)
        done = [*enrollment.done, step_id]
        next_step = None
        position = sequence.index_of(step_id)
        if position is None:
            # The step was removed: continue after the last step passed that still exists.
            known = [i for i in (sequence.index_of(s) for s in done) if i is not None]
            position = max(known) if known else -1
        for candidate in sequence.steps[position + 1 :]:
            if candidate.id not in done:
                next_step = candidate
                break
        updated = replace(enrollment, done=done, attempts=0)
        next_touch = None
        if next_step is None:
            updated.state, updated.step = "done", None
        else:
            updated.step = next_step.id
            member = touch_id(sequence.id, generation, next_step.id, lead_id)
            zone = lead_zone(lead.data, self.rt.settings.default_timezone)
            due = due_time(sequence, next_step, now, zone, member)
            next_touch = (member, due.timestamp())
        self.store.advance(touch.member, ledger_state, updated, next_touch, sent)
        return outcome


def _is_redis_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.RedisError)
