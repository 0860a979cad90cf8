"""The send ledger: one entry per touch (``<state>:<unix time>``) that makes each touch
produce at most one email, however often the queue delivers it.

Reserving, releasing and finishing a touch are Lua scripts (atomic with the frequency
cap, the enrollment check and the counters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

import redis
from redis.commands.core import Script

from worker.enrollment import Enrollment, TouchRef
from worker.store.keys import Keys
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
    """What a sent touch adds to the counters and to the lead's received content."""

    lateness: float
    content_ids: tuple[str, ...] = ()


class Ledger:
    """The per-lead send ledgers, received content and unknown outcomes."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: dict[str, Script],
        suppression: Callable[[str], str | None],
    ) -> None:
        """Args:
        suppression: Why an address is suppressed, or None
            (:meth:`SuppressionStore.reason`): read just before each reservation and
            passed in, since the address's key lives in another slot than the lead's.
        """
        self.redis = client
        self.keys = keys
        self.suppression = suppression
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
        touch = TouchRef.parse(member)
        # The lead's own suppressed flag (set on every lead of an address when it is
        # suppressed, after the address's entry) is checked inside the script; the
        # address's entry is read here, one round trip before (docs/scale-notes.md, 2).
        address_suppressed = self.suppression(email) or ""
        result = self._reserve(
            keys=[
                self.keys.lead(touch.lead_id),
                self.keys.ledger(touch.lead_id),
                self.keys.enrollments(touch.lead_id),
            ],
            args=[
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
        return Reservation.from_script(cast(list[bytes | str], result))

    def release(self, member: str, state: str, reserved_at: float, previous: str) -> bool:
        """Undo a reservation whose send certainly did not happen (``lua/release_send.lua``);
        False when it was no longer ours (another worker recorded the touch as
        outcome-unknown after the send timeout), and nothing changed."""
        touch = TouchRef.parse(member)
        return bool(
            self._release(
                keys=[self.keys.lead(touch.lead_id), self.keys.ledger(touch.lead_id)],
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
        touch = TouchRef.parse(member)
        bucket = self.keys.bucket(touch.lead_id)
        extra: list[str | float] = ["", "", note, TIMELINE_MAXLEN, TIMELINE_TTL_SECONDS]
        if sent is not None:
            extra = [
                f"{touch.step}:sent",
                repr(max(0.0, sent.lateness)),
                note,
                TIMELINE_MAXLEN,
                TIMELINE_TTL_SECONDS,
                *sent.content_ids,
            ]
        moved = self._advance(
            keys=[
                self.keys.enrollments(touch.lead_id),
                self.keys.ledger(touch.lead_id),
                self.keys.schedule(bucket),
                self.keys.claimed(bucket),
                self.keys.stats(touch.sequence, bucket),
                self.keys.stats_index(bucket),
                self.keys.bucket_counters(bucket),
                self.keys.received(touch.lead_id),
                self.keys.timeline(touch.lead_id),
            ],
            args=[
                touch.sequence,
                touch.generation,
                touch.step,
                member,
                touch.ledger_field,
                ledger_state,
                enrollment.to_json(),
                next_touch[0] if next_touch else "",
                next_touch[1] if next_touch else 0,
                *extra,
            ],
        )
        return bool(moved)

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
            keys=[self.keys.ledger(touch.lead_id)],
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
        raw = self.redis.hget(self.keys.ledger(touch.lead_id), touch.ledger_field)
        return cast(bytes, raw).decode() if raw else None

    def sequences_touched(self, lead_id: str) -> set[str]:
        """Ids of the sequences with any ledger entry for this lead."""
        fields = cast(list[bytes], self.redis.hkeys(self.keys.ledger(lead_id)))
        return {field.decode().split(":", 1)[0] for field in fields}

    def received(self, lead_id: str) -> frozenset[str]:
        """Content ids this lead has been sent."""
        members = cast(set[bytes], self.redis.smembers(self.keys.received(lead_id)))
        return frozenset(m.decode() for m in members)

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
