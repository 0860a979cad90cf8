"""The send ledger: one entry per touch (``<state>:<unix time>``) that makes each touch
produce at most one email, however often the queue delivers it. The entries are the
``l:<sequence>:<generation>:<step>`` fields of the lead's hash, and the content it
received its ``r`` field (:meth:`~worker.store.keys.Keys.lead`).

Reserving, releasing and finishing a touch are Lua scripts (atomic with the frequency
cap, the enrollment check and the counters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import cast

import redis
from redis.commands.core import Script

from worker.enrollment import Enrollment, TouchRef
from worker.store.counters import day_fields, register_fields
from worker.store.enrollments import pack_enrollment, received_ids
from worker.store.keys import LEDGER_FIELD, RECEIVED_FIELD, Keys
from worker.store.scripts import Call, run_pipelined
from worker.store.timeline import TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS


class LedgerState(StrEnum):
    """The state of a touch in the ledger."""

    SENDING = "sending"  # reserved; the request is (or was) in flight
    SENT = "sent"
    RETRY = "retry"  # certainly not sent; may be reserved again
    DEAD = "dead"  # failed for good
    UNKNOWN = "unknown"  # a worker stopped mid-request: never resent blindly
    SKIPPED = "skipped"

    def at(self, when: float) -> str:
        """The ledger entry for this state at ``when``."""
        return f"{self.value}:{when}"


class Verdict(StrEnum):
    """What ``reserve_send.lua`` decided."""

    OK = "ok"  # reserved: send it
    BUSY = "busy"  # another worker is sending it right now
    UNKNOWN = "unknown"  # a reservation from a worker that died mid-request
    DONE = "done"  # finished already (sent, dead, unknown...)
    SUPPRESSED = "suppressed"
    CAPPED = "capped"  # the frequency cap holds it back
    STALE = "stale"  # the enrollment no longer waits for this touch


@dataclass(frozen=True)
class Reservation:
    """A verdict with what comes with it.

    Attributes:
        previous_touch: With OK: the lead's last_touch before (to undo the reservation).
        detail: With DONE the ledger state, with SUPPRESSED the reason.
        free_at: With CAPPED: when the cap lets the lead be touched again.
    """

    verdict: Verdict
    previous_touch: str = ""
    detail: str = ""
    free_at: float | None = None

    @classmethod
    def from_script(cls, raw: list[bytes | str]) -> Reservation:
        parts = [part.decode() if isinstance(part, bytes) else str(part) for part in raw]
        verdict = Verdict(parts[0])
        extra = parts[1] if len(parts) > 1 else ""
        if verdict is Verdict.OK:
            return cls(verdict, previous_touch=extra)
        if verdict is Verdict.CAPPED:
            return cls(verdict, free_at=float(extra))
        return cls(verdict, detail=extra)


@dataclass(frozen=True)
class Sent:
    """What a sent touch adds to the counters and to the lead's received content.

    Attributes:
        at: When it was sent (the report's day); 0 counts no day field.
        groups: What the report groups it by (:func:`~worker.store.counters.report_groups`).
    """

    lateness: float
    content_ids: tuple[str, ...] = ()
    #: The per-step counter it adds to: ``sent`` (an email to the lead), ``notified``
    #: (a notify step's internal email) or ``posted`` (a webhook step).
    counter: str = "sent"
    at: float = 0.0
    groups: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reserve:
    """The arguments of one :meth:`Ledger.reserve`, for :meth:`Ledger.reserve_many`."""

    member: str
    email: str
    now: float
    cap_seconds: float
    capped: bool
    stale_after: float


@dataclass(frozen=True)
class Advance:
    """The arguments of one :meth:`Ledger.advance`, for :meth:`Ledger.advance_many`."""

    member: str
    ledger_state: str
    enrollment: Enrollment
    next_touch: tuple[str, float] | None
    sent: Sent | None = None
    note: str = ""


class Ledger:
    """The per-lead send ledgers, received content and unknown outcomes.

    The ``*_many`` methods run several per-lead script calls in one round trip: a
    non-transactional pipeline of the same scripts, each still touching one lead's keys
    (cluster-safe), each atomic on its own, each with its own result.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: dict[str, Script],
        suppressions: Callable[[Sequence[str]], list[str | None]],
    ) -> None:
        """Args:
        suppressions: Why each address is suppressed, or None
            (:meth:`SuppressionStore.reasons`, one round trip): read just before the
            reservations and passed in, since an address's key lives in another slot
            than the lead's.
        """
        self.redis = client
        self.keys = keys
        self.suppressions = suppressions
        self._reserve = scripts["reserve_send"]
        self._release = scripts["release_send"]
        self._advance = scripts["advance"]
        self._reopen = scripts["reopen_send"]

    def reserve(
        self,
        member: str,
        email: str,
        now: float,
        cap_seconds: float,
        capped: bool,
        stale_after: float,
        resend: bool = False,
    ) -> Reservation:
        """Reserve one touch for sending (see ``lua/reserve_send.lua``).

        Args:
            resend: An operator's retry of a failed touch: the enrollment has moved on
                past the step, and must only still be the same one and not exited.
        """
        call = Reserve(member, email, now, cap_seconds, capped, stale_after)
        # The lead's own suppressed flag (set on every lead of an address when it is
        # suppressed, after the address's entry) is checked inside the script; the
        # address's entry is read here, one round trip before (docs/scale-notes.md, 2).
        keys, args = self._reserve_call(call, self.suppressions([email])[0] or "", resend)
        raw = self._reserve(keys=keys, args=args)
        return Reservation.from_script(cast(list[bytes | str], raw))

    def reserve_many(self, calls: Sequence[Reserve]) -> list[Reservation | redis.RedisError]:
        """:meth:`reserve` for several touches (of distinct leads) in one round trip;
        a script error is returned in its touch's place.

        Raises:
            redis.RedisError: The round trip failed: any of the touches may be reserved
                (:meth:`release` undoes exactly ours).
        """
        suppressed = self.suppressions([call.email for call in calls])
        script_calls = [
            self._reserve_call(call, reason or "")
            for call, reason in zip(calls, suppressed, strict=True)
        ]
        return [
            raw if isinstance(raw, redis.RedisError) else Reservation.from_script(raw)
            for raw in run_pipelined(self.redis, self._reserve, script_calls, raise_on_error=False)
        ]

    def _reserve_call(self, call: Reserve, address_suppressed: str, resend: bool = False) -> Call:
        """The KEYS and ARGV of ``reserve_send.lua`` for one touch."""
        member, now = call.member, call.now
        cap_seconds, capped, stale_after = call.cap_seconds, call.capped, call.stale_after
        touch = TouchRef.parse(member)
        return (
            [self.keys.lead(touch.lead_id)],
            [
                touch.ledger_field,
                repr(now),
                cap_seconds,
                "1" if capped else "0",
                stale_after,
                touch.sequence,
                touch.generation,
                touch.step,
                "1" if resend else "0",
                address_suppressed,
            ],
        )

    def release(self, member: str, state: str, reserved_at: float, previous: str) -> bool:
        """Undo a reservation whose send certainly did not happen (``lua/release_send.lua``);
        False when it was no longer ours (another worker recorded the touch as
        outcome-unknown after the send timeout), and nothing changed."""
        touch = TouchRef.parse(member)
        return bool(
            self._release(
                keys=[self.keys.lead(touch.lead_id)],
                args=[touch.ledger_field, state, repr(reserved_at), previous],
            )
        )

    def advance(
        self,
        member: str,
        ledger_state: str,
        enrollment: Enrollment,
        next_touch: tuple[str, float] | None,
        sent: Sent | None = None,
        note: str = "",
    ) -> bool:
        """Record a touch's outcome and move its enrollment on (see ``lua/advance.lua``).

        Args:
            ledger_state: The new ledger entry ('' leaves it as it is).
            enrollment: The enrollment after this touch.
            next_touch: The touch to schedule next, with its due time.
            sent: For a touch that was sent: what to count and remember, in the same
                atomic step.
            note: A timeline entry for the lead ('' records nothing), in the same step.

        Returns:
            True if the enrollment moved; False if it had already moved on.
        """
        keys, args = self._advance_call(
            Advance(member, ledger_state, enrollment, next_touch, sent, note)
        )
        return bool(self._advance(keys=keys, args=args))

    def advance_many(self, calls: Sequence[Advance]) -> list[bool | redis.RedisError]:
        """:meth:`advance` for several touches (of distinct leads) in one round trip;
        a script error is returned in its touch's place.

        Raises:
            redis.RedisError: The round trip failed: any of them may have been recorded.
        """
        return [
            raw if isinstance(raw, redis.RedisError) else bool(raw)
            for raw in run_pipelined(
                self.redis,
                self._advance,
                [self._advance_call(call) for call in calls],
                raise_on_error=False,
            )
        ]

    def _advance_call(self, call: Advance) -> Call:
        """The KEYS and ARGV of ``advance.lua`` for one touch."""
        member, ledger_state, enrollment = call.member, call.ledger_state, call.enrollment
        next_touch, sent, note = call.next_touch, call.sent, call.note
        touch = TouchRef.parse(member)
        bucket = self.keys.bucket(touch.lead_id)
        extra: list[str | float] = ["", "", note, TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS]
        if sent is not None:
            days = day_fields(sent.at, touch.step, sent.counter, sent.groups) if sent.at else []
            register_fields(self.redis, self.keys, touch.sequence, [f"{touch.step}:{sent.counter}"])
            extra = [
                "\n".join([f"{touch.step}:{sent.counter}", *days]),
                # Lateness given = the script counts a global `sent`: emails to the lead
                # only (notified/posted are counted per step; Counters.global_counters).
                repr(max(0.0, sent.lateness)) if sent.counter == "sent" else "",
                note,
                TIMELINE_MAXLEN,
                TIMELINE_TTL_SECONDS,
                *sent.content_ids,
            ]
        return (
            [
                self.keys.lead(touch.lead_id),
                self.keys.schedule(bucket),
                self.keys.claimed(bucket),
                self.keys.stats(touch.sequence, bucket),
                self.keys.stats_index(bucket),
                self.keys.bucket_counters(bucket),
                self.keys.timeline(touch.lead_id),
            ],
            [
                touch.sequence,
                touch.generation,
                touch.step,
                member,
                touch.ledger_field,
                ledger_state,
                pack_enrollment(enrollment),
                next_touch[0] if next_touch else "",
                next_touch[1] if next_touch else 0,
                *extra,
            ],
        )

    def reopen(self, member: str, when: float) -> str | None:
        """Make a failed touch (ledger ``dead:``) sendable again (``retry:``).

        Only a touch that certainly was not sent is reopened: ``dead:`` means SendGrid
        refused it, the render failed or the retries ran out. Anything else (sent,
        unknown outcome, skipped, never reserved) is left as it is.

        Returns:
            None when reopened; else the ledger entry that stopped it ("" when none).
        """
        touch = TouchRef.parse(member)
        raw = self._reopen(
            keys=[self.keys.lead(touch.lead_id)],
            args=[touch.ledger_field, LedgerState.RETRY.at(when)],
        )
        blocked = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not blocked:
            return None
        return "" if blocked == "none" else blocked

    def record_unknown(self, member: str, when: float) -> None:
        """Remember a send whose outcome is unknown, for ``nurture status``."""
        touch = TouchRef.parse(member)
        self.redis.zadd(self.keys.unknown(self.keys.bucket(touch.lead_id)), {member: when})

    def state(self, member: str) -> str | None:
        """The touch's ledger entry (``<state>:<time>``), None if never reserved."""
        touch = TouchRef.parse(member)
        raw = self.redis.hget(self.keys.lead(touch.lead_id), LEDGER_FIELD + touch.ledger_field)
        return cast(bytes, raw).decode() if raw else None

    def entries(self, lead_id: str) -> dict[str, str]:
        """The lead's whole ledger: ledger field (``<seq>:<gen>:<step>``) -> entry."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.lead(lead_id)))
        start = LEDGER_FIELD.encode()
        return {
            name[len(start) :].decode(): value.decode()
            for name, value in raw.items()
            if name.startswith(start)
        }

    def last_sent(self, lead_id: str, sequence: str, generation: int) -> str | None:
        """The step of this enrollment sent last (by the ledger's times), None if none."""
        prefix = f"{sequence}:{generation}:"
        sent = [
            (float(state[5:]), name[len(prefix) :])
            for name, state in self.entries(lead_id).items()
            if name.startswith(prefix) and state.startswith("sent:")
        ]
        return max(sent)[1] if sent else None

    def sequences_touched(self, lead_id: str) -> set[str]:
        """Ids of the sequences with any ledger entry for this lead."""
        fields = cast(list[bytes], self.redis.hkeys(self.keys.lead(lead_id)))
        return {
            name[len(LEDGER_FIELD) :].split(":", 1)[0]
            for field in fields
            if (name := field.decode()).startswith(LEDGER_FIELD)
        }

    def received(self, lead_id: str) -> frozenset[str]:
        """Content ids this lead has been sent."""
        return received_ids(
            cast(bytes | None, self.redis.hget(self.keys.lead(lead_id), RECEIVED_FIELD))
        )

    def unknown_count(self) -> int:
        """How many sends of unknown outcome there are, over every bucket."""
        pipe = self.redis.pipeline(transaction=False)
        for bucket in range(self.keys.shards):
            pipe.zcard(self.keys.unknown(bucket))
        return sum(cast(list[int], pipe.execute()))

    def unknown_outcomes(self, limit: int = 100) -> list[tuple[str, float]]:
        """The earliest ``limit`` sends of unknown outcome, over every bucket."""
        pipe = self.redis.pipeline(transaction=False)
        for bucket in range(self.keys.shards):
            pipe.zrange(self.keys.unknown(bucket), 0, limit - 1, withscores=True)
        found = [
            (m.decode(), float(s))
            for raw in pipe.execute()
            for m, s in cast(list[tuple[bytes, float]], raw)
        ]
        return sorted(found, key=lambda item: (item[1], item[0]))[:limit]
