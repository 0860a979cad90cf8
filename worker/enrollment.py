"""One lead's passage through one sequence: its states and the only ways it moves.

An enrollment is ``active`` while a step is pending, ``done`` when every step has
passed (sent, skipped or failed) and ``exited`` when something ended it early (a
reply, an unsubscribe, a disqualification, a removed sequence...). Every change of
state goes through the transitions here (:meth:`Enrollment.start`,
:meth:`Enrollment.advance`, :meth:`Enrollment.skip`, :meth:`Enrollment.retry`,
:meth:`Enrollment.exit`), used by the event pipeline and the sender alike; the store
only persists the result.

A *touch* is one step of one enrollment: its id (:func:`touch_id`) is the member of
the schedule, and its :meth:`TouchRef.ledger_field` the key of its entry in the
lead's send ledger.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

# Separates the parts of a touch id; ids with control characters are refused at ingest.
SEP = "\x1f"


class EnrollmentState(StrEnum):
    """Where an enrollment is (stored as this text in the enrollment JSON)."""

    ACTIVE = "active"
    DONE = "done"
    EXITED = "exited"


class ExitKind(StrEnum):
    """Why an enrollment ended early."""

    DISQUALIFIED = "disqualified"
    REQUALIFIED = "requalified"  # a pending decline withdrawn
    EXIT_ON = "exit_on"  # the sequence's exit_on listed the event type
    UNSUBSCRIBED = "unsubscribed"  # a lead.unsubscribed event (unsubscribe, bounce...)
    SUPPRESSED = "suppressed"  # the address was found suppressed at send time
    SEQUENCE_REMOVED = "sequence removed"  # a live edit removed the sequence
    MERGED = "merged"  # the CRM merged the lead into another; it goes on there
    GOAL = "goal"  # the lead reached one of the sequence's goals (a conversion)
    CONTENT_EXHAUSTED = "content exhausted"  # a needs_content step found no new piece


@dataclass(frozen=True)
class ExitReason:
    """Why an enrollment exited; :attr:`text` is what the enrollment stores."""

    kind: ExitKind
    detail: str = ""

    @property
    def text(self) -> str:
        if self.kind is ExitKind.EXIT_ON:
            return f"exit_on:{self.detail}"
        if self.kind is ExitKind.SUPPRESSED:
            return f"suppressed:{self.detail}"
        if self.kind is ExitKind.GOAL:
            return f"goal:{self.detail}"
        if self.kind is ExitKind.CONTENT_EXHAUSTED:
            return f"content exhausted: {self.detail}"
        if self.kind is ExitKind.UNSUBSCRIBED:
            return self.detail  # the suppression reason as given (unsubscribe, bounce...)
        return self.kind.value

    @classmethod
    def exit_on(cls, event_type: str) -> ExitReason:
        return cls(ExitKind.EXIT_ON, event_type)

    @classmethod
    def goal(cls, event_type: str) -> ExitReason:
        return cls(ExitKind.GOAL, event_type)

    @classmethod
    def unsubscribed(cls, reason: str) -> ExitReason:
        return cls(ExitKind.UNSUBSCRIBED, reason)

    @classmethod
    def suppressed(cls, reason: str) -> ExitReason:
        return cls(ExitKind.SUPPRESSED, reason)


DISQUALIFIED = ExitReason(ExitKind.DISQUALIFIED)
REQUALIFIED = ExitReason(ExitKind.REQUALIFIED)
SEQUENCE_REMOVED = ExitReason(ExitKind.SEQUENCE_REMOVED)
MERGED = ExitReason(ExitKind.MERGED)


@dataclass(frozen=True)
class Enrollment:
    """One lead's passage through one sequence (immutable: transitions return a new one).

    Attributes:
        generation: Increments on each new enrollment in the same sequence, so a
            touch scheduled for an old enrollment is recognised as stale.
        state: See :class:`EnrollmentState`.
        step: Id of the step pending now (None when none is).
        done: Step ids already passed (sent, skipped, failed).
        trigger: The trigger event (id, type, occurred_at, data) for templates.
        started: Unix time of enrollment.
        reason: Why it exited (:attr:`ExitReason.text`).
        attempts: Failed attempts at the current step.
    """

    generation: int
    state: EnrollmentState
    step: str | None
    done: list[str] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    reason: str | None = None
    attempts: int = 0

    # -- transitions ------------------------------------------------------------

    @classmethod
    def start(
        cls, previous: Enrollment | None, first_step: str, trigger: dict[str, Any], now: float
    ) -> Enrollment:
        """Enroll: a new generation waiting for the first step."""
        generation = previous.generation + 1 if previous else 1
        return cls(
            generation=generation,
            state=EnrollmentState.ACTIVE,
            step=first_step,
            trigger=trigger,
            started=now,
        )

    def advance(self, next_step: str | None) -> Enrollment:
        """The pending step passed (sent or failed for good): wait for ``next_step``,
        or finish when there is none."""
        done = [*self.done, self.step] if self.step is not None else list(self.done)
        if next_step is None:
            return replace(self, done=done, attempts=0, state=EnrollmentState.DONE, step=None)
        return replace(self, done=done, attempts=0, step=next_step)

    def skip(self, next_step: str | None) -> Enrollment:
        """The pending step is passed without sending (its condition was false, or a
        live edit removed it): recorded as passed like a sent one."""
        return self.advance(next_step)

    def retry(self) -> Enrollment:
        """One more failed attempt at the pending step."""
        return replace(self, attempts=self.attempts + 1)

    def exit(self, reason: ExitReason) -> Enrollment:
        """End the enrollment early; nothing more is sent for it."""
        return replace(self, state=EnrollmentState.EXITED, reason=reason.text, step=None)

    # -- queries ----------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.state is EnrollmentState.ACTIVE

    def waits_for(self, generation: int, step: str) -> bool:
        """Whether this enrollment is still waiting for exactly this touch."""
        return self.active and self.generation == generation and self.step == step

    def pending_touch(self, sequence: str, lead_id: str) -> str | None:
        """The touch id of the pending step, if any."""
        if not self.active or self.step is None:
            return None
        return touch_id(sequence, self.generation, self.step, lead_id)

    # -- storage form ---------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Enrollment:
        values = json.loads(raw)
        values["state"] = EnrollmentState(values["state"])
        return cls(**values)


@dataclass(frozen=True)
class TouchRef:
    """The parts of a touch id."""

    sequence: str
    generation: int
    step: str
    lead_id: str

    @classmethod
    def parse(cls, member: str | bytes) -> TouchRef:
        text = member.decode() if isinstance(member, bytes) else member
        sequence, generation, step, lead_id = text.split(SEP, 3)
        return cls(sequence, int(generation), step, lead_id)

    @property
    def member(self) -> str:
        return touch_id(self.sequence, self.generation, self.step, self.lead_id)

    @property
    def ledger_field(self) -> str:
        """The field of this touch in its lead's send ledger."""
        return ledger_field(self.sequence, self.generation, self.step)


def touch_id(sequence: str, generation: int, step: str, lead_id: str) -> str:
    """The schedule member for one step of one enrollment."""
    return SEP.join((sequence, str(generation), step, lead_id))


def ledger_field(sequence: str, generation: int, step: str) -> str:
    """The ledger field (within the lead's ledger hash) for one touch."""
    return f"{sequence}:{generation}:{step}"
