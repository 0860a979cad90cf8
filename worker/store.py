"""The state store: leads, enrollments, the durable schedule, the send ledger,
suppressions, dead letters and counters, all in Redis.

Multi-key changes for one lead happen in MULTI/EXEC transactions or Lua scripts
(``worker/lua/*.lua``, loaded once); every processing of one lead's events holds
that lead's lock, so read-modify-write of its enrollments is safe.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, cast

import redis
from redis.commands.core import Script
from redis.typing import EncodableT, FieldT

from worker.keys import Keys, ledger_field, parse_touch, touch_id

EVENT_DEDUP_SECONDS = 8 * 24 * 3600  # the contract asks for at least 7 days
#: How long an event id stays marked while its event is being queued. Should Redis fail
#: between marking and queueing (so the mark cannot be undone), the sender's retry is
#: accepted once this has passed instead of being taken for a replay for 8 days.
EVENT_PENDING_SECONDS = 120
WEBHOOK_DEDUP_SECONDS = 8 * 24 * 3600
DEAD_LETTER_MAXLEN = 1_000_000


def _load_script(client: redis.Redis, name: str) -> Script:
    source = resources.files("worker").joinpath("lua", f"{name}.lua").read_text()
    return client.register_script(source)


@dataclass
class Enrollment:
    """One lead's passage through one sequence.

    Attributes:
        generation: Increments on each new enrollment in the same sequence, so a
            touch scheduled for an old enrollment is recognised as stale.
        state: ``active``, ``done`` (all steps passed) or ``exited``.
        step: Id of the step pending now (None when none is).
        done: Step ids already passed (sent, skipped, failed).
        trigger: The trigger event (id, type, occurred_at, data) for templates.
        started: Unix time of enrollment.
        reason: Why it exited.
        attempts: Failed attempts at the current step.
    """

    generation: int
    state: str
    step: str | None
    done: list[str] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    reason: str | None = None
    attempts: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Enrollment:
        return cls(**json.loads(raw))

    @property
    def active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class LeadRecord:
    """A stored lead with its flags."""

    id: str
    data: dict[str, Any]
    flags: dict[str, str]

    @property
    def email(self) -> str | None:
        value = self.data.get("email")
        return str(value) if value else None

    @property
    def suppressed(self) -> str | None:
        return self.flags.get("suppressed")

    @property
    def disqualified(self) -> str | None:
        """The disqualification reason ('' counts as not disqualified)."""
        return self.flags.get("disq") or None

    def seen(self, event_type: str) -> float | None:
        value = self.flags.get(f"seen:{event_type}")
        return float(value) if value else None


@dataclass(frozen=True)
class Sent:
    """What a sent touch adds to the counters and to the lead's received content."""

    lateness: float
    content_ids: tuple[str, ...] = ()


def _lead_record(lead_id: str, raw: Any) -> LeadRecord | None:
    fields = cast(dict[bytes, bytes], raw)
    if not fields:
        return None
    flags = {k.decode(): v.decode() for k, v in fields.items() if k != b"data"}
    data = json.loads(fields.get(b"data", b"{}"))
    return LeadRecord(id=lead_id, data=data, flags=flags)


class Store:
    """Typed access to the worker's Redis data."""

    def __init__(self, client: redis.Redis, prefix: str = "nurture") -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self._claim_due = _load_script(client, "claim_due")
        self._reserve = _load_script(client, "reserve_send")
        self._release = _load_script(client, "release_send")
        self._advance = _load_script(client, "advance")

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    # -- events ---------------------------------------------------------------

    def mark_events_seen(self, event_ids: list[str]) -> list[bool]:
        """Mark event ids as being queued; True for each id not seen before.

        The mark is short-lived (:data:`EVENT_PENDING_SECONDS`) until
        :meth:`confirm_events` extends it to the dedup window, once the events are queued.
        """
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.set(self.keys.event(event_id), "1", nx=True, ex=EVENT_PENDING_SECONDS)
        return [bool(result) for result in pipe.execute()]

    def confirm_events(self, event_ids: Iterable[str]) -> None:
        """The events are queued: keep their ids for the whole dedup window."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.expire(self.keys.event(event_id), EVENT_DEDUP_SECONDS)
        pipe.execute()

    def forget_events(self, event_ids: Iterable[str]) -> None:
        """Undo ``mark_events_seen`` for events that could not be queued, so a retry works."""
        ids = [self.keys.event(event_id) for event_id in event_ids]
        if ids:
            self.redis.delete(*ids)

    def event_done(self, event_id: str) -> None:
        """Record that an event was applied (a redelivered message then changes nothing)."""
        key = self.keys.event(event_id)
        # XX KEEPTTL: the dedup window stays what ingest set; a key gone already (past
        # the window) gets a fresh one rather than living forever.
        if not self.redis.set(key, "done", xx=True, keepttl=True):
            self.redis.set(key, "done", ex=EVENT_DEDUP_SECONDS)

    # -- leads ----------------------------------------------------------------

    @contextmanager
    def lead_lock(self, lead_id: str, timeout: float = 30.0) -> Iterator[None]:
        """Serialise work on one lead across threads, processes and hosts."""
        lock = self.redis.lock(
            self.keys.lead_lock(lead_id), timeout=timeout, blocking_timeout=timeout
        )
        if not lock.acquire():
            raise redis.exceptions.LockError(f"lead {lead_id!r} stayed locked for {timeout}s")
        try:
            yield
        finally:
            # Expired while we worked: fine, the work itself is idempotent.
            with suppress(redis.exceptions.LockNotOwnedError):
                lock.release()

    def get_lead(self, lead_id: str) -> LeadRecord | None:
        """The stored lead, or None when never seen."""
        return _lead_record(lead_id, self.redis.hgetall(self.keys.lead(lead_id)))

    def event_and_lead(self, event_id: str, lead_id: str) -> tuple[bool, LeadRecord | None]:
        """Whether the event was applied already, and the stored lead: one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.event(event_id))
        pipe.hgetall(self.keys.lead(lead_id))
        mark, raw_lead = pipe.execute()
        return mark == b"done", _lead_record(lead_id, raw_lead)

    def save_lead(
        self,
        lead_id: str,
        data: Mapping[str, Any],
        old_email: str | None,
        flags: Mapping[str, str] | None = None,
    ) -> None:
        """Write the lead's data (and ``flags``) and keep the email index current."""
        email = data.get("email")
        pipe = self.redis.pipeline(transaction=True)
        fields: dict[FieldT, EncodableT] = {"data": json.dumps(data, ensure_ascii=False)}
        fields.update(flags or {})
        pipe.hset(self.keys.lead(lead_id), mapping=fields)
        if old_email and old_email.lower() != str(email or "").lower():
            pipe.srem(self.keys.email_index(old_email), lead_id)
        if email:
            pipe.sadd(self.keys.email_index(str(email)), lead_id)
        pipe.execute()

    def set_lead_flags(self, lead_id: str, **flags: str | float | None) -> None:
        """Set (or, with None, delete) flags on the lead hash."""
        key = self.keys.lead(lead_id)
        pipe = self.redis.pipeline(transaction=True)
        for name, value in flags.items():
            name = name.replace("__", ":")
            if value is None:
                pipe.hdel(key, name)
            else:
                pipe.hset(key, name, str(value))
        pipe.execute()

    def claim_decline(self, lead_id: str, when: float) -> bool:
        """Mark the lead declined; True only the first time (a lead gets one decline)."""
        return bool(self.redis.hsetnx(self.keys.lead(lead_id), "declined", str(when)))

    def leads_by_email(self, email: str) -> list[str]:
        """Lead ids that use this address."""
        members = cast(set[bytes], self.redis.smembers(self.keys.email_index(email)))
        return sorted(m.decode() for m in members)

    # -- suppression ----------------------------------------------------------

    def suppress_email(self, email: str, reason: str) -> bool:
        """Suppress an address (bounce, spam report, unsubscribe); True if newly suppressed."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.suppressed_email(email), reason, nx=True)
        pipe.sadd(self.keys.suppressed_set, email.lower())
        return bool(pipe.execute()[0])

    def email_suppressed(self, email: str) -> str | None:
        """Why the address is suppressed, or None."""
        value = self.redis.get(self.keys.suppressed_email(email))
        return value.decode() if isinstance(value, bytes) else None

    def suppressed_count(self) -> int:
        return int(self.redis.scard(self.keys.suppressed_set))

    # -- enrollments ----------------------------------------------------------

    def enrollments(self, lead_id: str) -> dict[str, Enrollment]:
        """Every enrollment of a lead, by sequence id."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.enrollments(lead_id)))
        return {k.decode(): Enrollment.from_json(v) for k, v in raw.items()}

    def enrollment(self, lead_id: str, sequence: str) -> Enrollment | None:
        raw = self.redis.hget(self.keys.enrollments(lead_id), sequence)
        return Enrollment.from_json(cast(bytes, raw)) if raw else None

    def touch_state(
        self, lead_id: str, sequence: str
    ) -> tuple[LeadRecord | None, Enrollment | None, frozenset[str]]:
        """What sending a touch needs, in one round trip: the lead, its enrollment in
        ``sequence`` and the content ids it has received."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.lead(lead_id))
        pipe.hget(self.keys.enrollments(lead_id), sequence)
        pipe.smembers(self.keys.received(lead_id))
        raw_lead, raw_enrollment, members = pipe.execute()
        return (
            _lead_record(lead_id, raw_lead),
            Enrollment.from_json(raw_enrollment) if raw_enrollment else None,
            frozenset(m.decode() for m in members),
        )

    def write_enrollment(
        self,
        lead_id: str,
        sequence: str,
        enrollment: Enrollment,
        *,
        schedule: tuple[str, float] | None = None,
        unschedule: Iterable[str] = (),
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Store an enrollment and, in the same transaction, (un)schedule its touches."""
        own = pipe is None
        pipe = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.enrollments(lead_id), sequence, enrollment.to_json())
        for member in unschedule:
            pipe.zrem(self.keys.schedule, member)
            pipe.zrem(self.keys.claimed, member)
        if schedule is not None:
            pipe.zadd(self.keys.schedule, {schedule[0]: schedule[1]})
        if own:
            pipe.execute()

    # -- schedule -------------------------------------------------------------

    def claim_due(self, now: float, limit: int, lease: float) -> list[tuple[str, float]]:
        """Atomically claim up to ``limit`` due touches (see ``lua/claim_due.lua``)."""
        flat = cast(
            list[bytes],
            self._claim_due(
                keys=[self.keys.schedule, self.keys.claimed], args=[now, limit, now + lease]
            ),
        )
        return [(flat[i].decode(), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def reschedule(self, member: str, when: float) -> None:
        """Put a claimed touch back on the schedule at ``when``."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.schedule, {member: when})
        pipe.zrem(self.keys.claimed, member)
        pipe.execute()

    def release_claim(self, member: str) -> None:
        """Drop a claim that needs no further work (stale or finished)."""
        self.redis.zrem(self.keys.claimed, member)

    def schedule_stats(self) -> dict[str, float | int | None]:
        """Counts of scheduled and claimed touches and the next due time."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.schedule)
        pipe.zcard(self.keys.claimed)
        pipe.zrange(self.keys.schedule, 0, 0, withscores=True)
        scheduled, claimed, first = pipe.execute()
        return {
            "scheduled": int(scheduled),
            "claimed": int(claimed),
            "next_due": float(first[0][1]) if first else None,
        }

    def scheduled_for(self, lead_id: str) -> list[tuple[str, float]]:
        """Pending touches of one lead (a scan: for status, preview and tests, not hot paths)."""
        out = []
        for enrollment_seq, enrollment in self.enrollments(lead_id).items():
            if enrollment.active and enrollment.step:
                member = touch_id(enrollment_seq, enrollment.generation, enrollment.step, lead_id)
                score = self.redis.zscore(self.keys.schedule, member)
                if score is None:
                    score = self.redis.zscore(self.keys.claimed, member)
                if score is not None:
                    out.append((member, float(score)))
        return sorted(out, key=lambda item: item[1])

    # -- ledger ---------------------------------------------------------------

    def reserve_send(
        self,
        member: str,
        email: str,
        now: float,
        cap_seconds: float,
        capped: bool,
        stale_after: float,
    ) -> list[str]:
        """Reserve one touch for sending (see ``lua/reserve_send.lua``)."""
        sequence, generation, step, lead_id = parse_touch(member)
        result = self._reserve(
            keys=[
                self.keys.lead(lead_id),
                self.keys.ledger(lead_id),
                self.keys.suppressed_email(email),
                self.keys.enrollments(lead_id),
            ],
            args=[
                ledger_field(sequence, generation, step),
                repr(now),
                cap_seconds,
                "1" if capped else "0",
                stale_after,
                sequence,
                generation,
                step,
            ],
        )
        return [part.decode() if isinstance(part, bytes) else str(part) for part in result]

    def release_send(self, member: str, state: str, reserved_at: float, previous: str) -> None:
        """Undo a reservation whose send certainly did not happen."""
        sequence, generation, step, lead_id = parse_touch(member)
        self._release(
            keys=[self.keys.lead(lead_id), self.keys.ledger(lead_id)],
            args=[ledger_field(sequence, generation, step), state, repr(reserved_at), previous],
        )

    def advance(
        self,
        member: str,
        ledger_state: str,
        enrollment: Enrollment,
        next_touch: tuple[str, float] | None,
        sent: Sent | None = None,
    ) -> bool:
        """Record a touch's outcome and move its enrollment on (see ``lua/advance.lua``).

        Args:
            sent: For a touch that was sent: what to count and remember, in the same
                atomic step.

        Returns:
            True if the enrollment moved; False if it had already moved on.
        """
        sequence, generation, step, lead_id = parse_touch(member)
        extra: list[str | float] = ["", ""]
        if sent is not None:
            extra = [f"{step}:sent", repr(max(0.0, sent.lateness)), *sent.content_ids]
        moved = self._advance(
            keys=[
                self.keys.enrollments(lead_id),
                self.keys.ledger(lead_id),
                self.keys.schedule,
                self.keys.claimed,
                self.keys.stats(sequence),
                self.keys.stats_index,
                self.keys.counters,
                self.keys.received(lead_id),
            ],
            args=[
                sequence,
                generation,
                step,
                member,
                ledger_field(sequence, generation, step),
                ledger_state,
                enrollment.to_json(),
                next_touch[0] if next_touch else "",
                next_touch[1] if next_touch else 0,
                *extra,
            ],
        )
        return bool(moved)

    def record_unknown(self, member: str, when: float) -> None:
        """Remember a send whose outcome is unknown, for ``nurture status``."""
        self.redis.zadd(self.keys.unknown, {member: when})

    def ledger_state(self, member: str) -> str | None:
        sequence, generation, step, lead_id = parse_touch(member)
        raw = self.redis.hget(self.keys.ledger(lead_id), ledger_field(sequence, generation, step))
        return cast(bytes, raw).decode() if raw else None

    def received(self, lead_id: str) -> frozenset[str]:
        """Content ids this lead has been sent."""
        members = cast(set[bytes], self.redis.smembers(self.keys.received(lead_id)))
        return frozenset(m.decode() for m in members)

    def unknown_outcomes(self, limit: int = 100) -> list[tuple[str, float]]:
        raw = self.redis.zrange(self.keys.unknown, 0, limit - 1, withscores=True)
        return [(m.decode(), float(s)) for m, s in cast(list[tuple[bytes, float]], raw)]

    # -- dead letters ---------------------------------------------------------

    def dead_letter(self, kind: str, reason: str, payload: Mapping[str, Any]) -> None:
        """Keep something that could not be processed, with the reason, for the operator."""
        self.redis.xadd(
            self.keys.dead,
            {
                "kind": kind,
                "reason": reason[:2000],
                "payload": json.dumps(payload, ensure_ascii=False, default=str)[:100_000],
                "at": repr(time.time()),
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )

    def dead_letters(self, limit: int = 20) -> list[dict[str, str]]:
        """The newest dead letters, newest first."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self.redis.xrevrange(self.keys.dead, count=limit),
        )
        return [
            {"id": entry_id.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
            for entry_id, fields in entries
        ]

    def dead_letter_count(self) -> int:
        return int(self.redis.xlen(self.keys.dead))

    # -- counters -------------------------------------------------------------

    def count(
        self,
        sequence: str,
        step: str,
        counter: str,
        amount: int = 1,
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Add to a per-sequence, per-step counter."""
        target = pipe if pipe is not None else self.redis
        target.hincrby(self.keys.stats(sequence), f"{step}:{counter}", amount)
        target.sadd(self.keys.stats_index, sequence)

    def count_global(self, counter: str, amount: float = 1) -> None:
        self.redis.hincrbyfloat(self.keys.counters, counter, amount)

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """sequence -> step -> counter -> value."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        sequences = cast(set[bytes], self.redis.smembers(self.keys.stats_index))
        for raw_seq in sorted(sequences):
            seq = raw_seq.decode()
            values = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.stats(seq)))
            for name, value in values.items():
                step, _, counter = name.decode().rpartition(":")
                out.setdefault(seq, {}).setdefault(step, {})[counter] = int(value)
        return out

    def global_counters(self) -> dict[str, float]:
        values = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.counters))
        return {k.decode(): float(v) for k, v in values.items()}

    # -- misc -----------------------------------------------------------------

    def unsubscribe_secret(self, configured: str | None) -> str:
        """The configured secret, else one generated once and shared through Redis."""
        if configured:
            return configured
        self.redis.set(self.keys.secret, secrets.token_urlsafe(32), nx=True)
        return cast(bytes, self.redis.get(self.keys.secret)).decode()

    def webhook_event_new(self, provider_event_id: str) -> bool:
        """True the first time a provider event id is seen."""
        return bool(
            self.redis.set(
                self.keys.webhook_event(provider_event_id), "1", nx=True, ex=WEBHOOK_DEDUP_SECONDS
            )
        )
