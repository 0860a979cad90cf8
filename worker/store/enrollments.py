"""Enrollments: the ``e:<sequence id>`` fields of each lead's hash, a packed enrollment
each (:meth:`~worker.store.keys.Keys.lead`).

Writing an enrollment and (un)scheduling its touch happen in one transaction here;
finishing a touch (which moves the enrollment on) is the ledger's ``advance`` script.

Storage form (:func:`pack_enrollment`), what the Lua scripts read first, plain to
``string.match``::

    <generation>|<state initial a/d/e>|<step>|<done,done...>|<attempts>|<started>|<tail>

``<tail>`` is a JSON array ``[trigger, reason]`` (trailing empties left off), the
trigger as ``[id, type, occurred, data]`` with ``occurred`` in unix seconds when that
gives back the same text and ``data`` left off when it is ``{}``. About 65 B instead of
210 B of JSON, small enough for the hash to stay a listpack. Enrollments written by
older versions (JSON objects) still read: :func:`unpack_enrollment` and the scripts take
both, and the next write packs them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from worker.enrollment import Enrollment, EnrollmentState
from worker.store.events import APPLIED
from worker.store.keys import ENROLLMENT_FIELD, LEDGER_FIELD, RECEIVED_FIELD, Keys
from worker.store.leads import LeadRecord, lead_record

#: Step ids that can go in the packed head (the loader allows ``[a-z0-9-]+``).
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.-]*$")
_STATES = {state.value[0]: state for state in EnrollmentState}


def _number(value: float) -> str:
    """A float as short text that reads back equal (``1795424400`` for a whole one)."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def _iso(stamp: int) -> str:
    """How the pipeline writes a trigger's ``occurred_at`` (``trigger_of``)."""
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def _pack_trigger(trigger: dict[str, Any]) -> Any:
    """``[id, type, occurred, data?]`` (no data: ``{}``); the dict as it is when it has
    other keys or no data."""
    occurred = trigger.get("occurred_at")
    if set(trigger) != {"id", "type", "occurred_at", "data"} or not isinstance(
        occurred, str | None
    ):
        return trigger
    if occurred is not None:
        try:
            seconds = int(datetime.fromisoformat(occurred.replace("Z", "+00:00")).timestamp())
        except (ValueError, OverflowError):
            seconds = None
        if seconds is not None and _iso(seconds) == occurred:
            occurred = seconds
    packed = [trigger["id"], trigger["type"], occurred]
    if trigger["data"] != {}:
        packed.append(trigger["data"])
    return packed


def _unpack_trigger(packed: Any) -> dict[str, Any]:
    if isinstance(packed, dict):
        return packed
    out: dict[str, Any] = {}
    if not packed:
        return out
    occurred = packed[2]
    out = {"id": packed[0], "type": packed[1], "occurred_at": occurred}
    if isinstance(occurred, int):
        out["occurred_at"] = _iso(occurred)
    out["data"] = packed[3] if len(packed) > 3 else {}
    return out


def pack_enrollment(enrollment: Enrollment) -> str:
    """The enrollment as stored (see the module's docstring); JSON when a step id
    would not fit the packed head."""
    ids = [enrollment.step or "", *enrollment.done]
    if not all(_PLAIN_ID.match(i) for i in ids) or not all(enrollment.done):
        return enrollment.to_json()
    trigger = _pack_trigger(enrollment.trigger) if enrollment.trigger else None
    tail: list[Any] = [trigger, enrollment.reason]
    while tail and tail[-1] is None:
        tail.pop()
    head = [
        str(enrollment.generation),
        enrollment.state.value[0],
        enrollment.step or "",
        ",".join(enrollment.done),
        str(enrollment.attempts),
        _number(enrollment.started),
    ]
    return "|".join(head) + "|" + json.dumps(tail, ensure_ascii=False, separators=(",", ":"))


def unpack_enrollment(raw: str | bytes) -> Enrollment:
    """A stored enrollment: packed, or the JSON object older versions wrote."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if text.startswith("{"):
        return Enrollment.from_json(text)
    generation, state, step, done, attempts, started, tail = text.split("|", 6)
    rest = json.loads(tail)
    rest += [None] * (2 - len(rest))
    return Enrollment(
        generation=int(generation),
        state=_STATES[state],
        step=step or None,
        done=done.split(",") if done else [],
        trigger=_unpack_trigger(rest[0]),
        started=float(started),
        reason=rest[1],
        attempts=int(attempts),
    )


@dataclass(frozen=True)
class TouchState:
    """What sending a touch needs: the lead, its enrollment, the content it received,
    and its engagement facts (store fields -> first time)."""

    lead: LeadRecord | None
    enrollment: Enrollment | None
    received: frozenset[str]
    engagement: dict[str, float] = field(default_factory=dict)


class EnrollmentStore:
    """Reads and writes enrollments."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def all(self, lead_id: str) -> dict[str, Enrollment]:
        """Every enrollment of a lead, by sequence id."""
        return enrollments_of(cast(dict[bytes, bytes], self.redis.hgetall(self.keys.lead(lead_id))))

    def get(self, lead_id: str, sequence: str) -> Enrollment | None:
        raw = self.redis.hget(self.keys.lead(lead_id), ENROLLMENT_FIELD + sequence)
        return unpack_enrollment(cast(bytes, raw)) if raw else None

    def event_and_lead(self, event_id: str, lead_id: str) -> tuple[bool, LeadRecord | None]:
        """Whether the event was applied already, and the stored lead: one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.event(event_id))
        pipe.hgetall(self.keys.lead(lead_id))
        mark, raw_lead = pipe.execute()
        return mark == APPLIED, lead_record(lead_id, raw_lead)

    def touch_state(self, lead_id: str, sequence: str) -> TouchState:
        """The lead, its enrollment in ``sequence``, its received content and its
        engagement: one round trip."""
        return self.touch_states([(lead_id, sequence)])[0]

    def touch_states(self, pairs: Sequence[tuple[str, str]]) -> list[TouchState]:
        """:meth:`touch_state` for several (lead, sequence) pairs: one round trip in all."""
        pipe = self.redis.pipeline(transaction=False)
        for lead_id, _sequence in pairs:
            pipe.hgetall(self.keys.lead(lead_id))
            pipe.hgetall(self.keys.engagement(lead_id))
        raw = pipe.execute()
        states = []
        for i, (lead_id, sequence) in enumerate(pairs):
            fields, engaged = raw[2 * i : 2 * i + 2]
            raw_enrollment = fields.get((ENROLLMENT_FIELD + sequence).encode())
            states.append(
                TouchState(
                    lead_record(lead_id, fields),
                    unpack_enrollment(raw_enrollment) if raw_enrollment else None,
                    received_of(fields),
                    {k.decode(): float(v) for k, v in engaged.items()},
                )
            )
        return states

    def write(
        self,
        lead_id: str,
        sequence: str,
        enrollment: Enrollment,
        *,
        schedule: tuple[str, float] | None = None,
        unschedule: Iterable[str] = (),
        count: Sequence[str] = (),
        new: bool = False,
    ) -> None:
        """Store an enrollment and, in the same transaction, (un)schedule its touches
        and add 1 to the report's day fields ``count`` (:func:`~worker.store.counters.day_fields`).

        This and the ledger's ``advance`` are the only writers of the schedule's
        entries for an enrollment. A ``new`` enrollment after an ended one (generation 2
        on) drops the ledger entries of the ended generations: ``reserve_send.lua``
        refuses their touches, so they are never read again. Any other write (an exit,
        a move) reads no ledger field.
        """
        # The lead's touches live in its bucket's shard: one slot, one transaction.
        bucket = self.keys.bucket(lead_id)
        key = self.keys.lead(lead_id)
        ended = self._ended_ledger(lead_id, sequence, enrollment) if new else []
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, ENROLLMENT_FIELD + sequence, pack_enrollment(enrollment))
        if ended:
            pipe.hdel(key, *ended)
        for name in count:
            pipe.hincrby(self.keys.stats(sequence, bucket), name, 1)
        if count:
            pipe.sadd(self.keys.stats_index(bucket), sequence)
        for member in unschedule:
            pipe.zrem(self.keys.schedule(bucket), member)
            pipe.zrem(self.keys.claimed(bucket), member)
        if schedule is not None:
            pipe.zadd(self.keys.schedule(bucket), {schedule[0]: schedule[1]})
        pipe.execute()

    def _ended_ledger(self, lead_id: str, sequence: str, enrollment: Enrollment) -> list[str]:
        """The ledger fields of the ended generations of ``sequence``, before the new
        ``enrollment`` (none, and no round trip, for a first one)."""
        if enrollment.generation < 2:
            return []
        prefix = f"{LEDGER_FIELD}{sequence}:"
        current = f"{prefix}{enrollment.generation}:"
        names = cast(list[bytes], self.redis.hkeys(self.keys.lead(lead_id)))
        return [
            name
            for raw in names
            if (name := raw.decode()).startswith(prefix) and not name.startswith(current)
        ]


def enrollments_of(fields: dict[bytes, bytes]) -> dict[str, Enrollment]:
    """The enrollments in a raw HGETALL answer of the lead hash, by sequence id."""
    start = ENROLLMENT_FIELD.encode()
    return {
        k[len(start) :].decode(): unpack_enrollment(v)
        for k, v in fields.items()
        if k.startswith(start)
    }


def received_of(fields: dict[bytes, bytes]) -> frozenset[str]:
    """The content ids received, from a raw HGETALL answer of the lead hash."""
    return received_ids(fields.get(RECEIVED_FIELD.encode()))


def received_ids(raw: bytes | None) -> frozenset[str]:
    """The content ids of the lead hash's ``r`` field (``,``-joined)."""
    return frozenset(raw.decode().split(",")) if raw else frozenset()
