"""Enrollments: each lead's hash of sequence id -> enrollment JSON.

Writing an enrollment and (un)scheduling its touch happen in one transaction here;
finishing a touch (which moves the enrollment on) is the ledger's ``advance`` script.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis

from worker.enrollment import Enrollment
from worker.store.events import APPLIED
from worker.store.keys import Keys
from worker.store.leads import LeadRecord, lead_record


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
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.enrollments(lead_id)))
        return {k.decode(): Enrollment.from_json(v) for k, v in raw.items()}

    def get(self, lead_id: str, sequence: str) -> Enrollment | None:
        raw = self.redis.hget(self.keys.enrollments(lead_id), sequence)
        return Enrollment.from_json(cast(bytes, raw)) if raw else None

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
        for lead_id, sequence in pairs:
            pipe.hgetall(self.keys.lead(lead_id))
            pipe.hget(self.keys.enrollments(lead_id), sequence)
            pipe.smembers(self.keys.received(lead_id))
            pipe.hgetall(self.keys.engagement(lead_id))
        raw = pipe.execute()
        states = []
        for i, (lead_id, _sequence) in enumerate(pairs):
            raw_lead, raw_enrollment, members, engaged = raw[4 * i : 4 * i + 4]
            states.append(
                TouchState(
                    lead_record(lead_id, raw_lead),
                    Enrollment.from_json(raw_enrollment) if raw_enrollment else None,
                    frozenset(m.decode() for m in members),
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
    ) -> None:
        """Store an enrollment and, in the same transaction, (un)schedule its touches.

        This and the ledger's ``advance`` are the only writers of the schedule's
        entries for an enrollment.
        """
        # The lead's touches live in its bucket's shard: one slot, one transaction.
        bucket = self.keys.bucket(lead_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.enrollments(lead_id), sequence, enrollment.to_json())
        for member in unschedule:
            pipe.zrem(self.keys.schedule(bucket), member)
            pipe.zrem(self.keys.claimed(bucket), member)
        if schedule is not None:
            pipe.zadd(self.keys.schedule(bucket), {schedule[0]: schedule[1]})
        pipe.execute()
