"""The durable schedule: touch id -> due time, and the claims schedulers hold on it.

Entering and leaving the schedule for an enrollment's touch happens with the
enrollment (``EnrollmentStore.write``, the ledger's ``advance`` script); this module
moves touches in time: claims, reschedules, the cap's hold-backs and the catch-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import redis
from redis.commands.core import Script

from worker.enrollment import TouchRef
from worker.store.keys import Keys
from worker.store.timeline import add_to


@dataclass(frozen=True)
class ScheduleStats:
    scheduled: int
    claimed: int
    next_due: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"scheduled": self.scheduled, "claimed": self.claimed, "next_due": self.next_due}


class ScheduleStore:
    """The schedule and claimed zsets, and the schedulers' heartbeats."""

    def __init__(self, client: redis.Redis, keys: Keys, claim_due: Script) -> None:
        self.redis = client
        self.keys = keys
        self._claim_due = claim_due

    def claim_due(self, now: float, limit: int, lease: float) -> list[tuple[str, float]]:
        """Atomically claim up to ``limit`` due touches (see ``lua/claim_due.lua``)."""
        flat = cast(
            list[bytes],
            self._claim_due(
                keys=[self.keys.schedule, self.keys.claimed], args=[now, limit, now + lease]
            ),
        )
        return [(flat[i].decode(), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def reschedule(self, member: str, when: float, note: str = "") -> None:
        """Put a claimed touch back on the schedule at ``when``; ``note``, if given, goes
        on the lead's timeline in the same round trip (why the touch waits)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.schedule, {member: when})
        pipe.zrem(self.keys.claimed, member)
        if note:
            add_to(pipe, self.keys, TouchRef.parse(member).lead_id, [note])
        pipe.execute()

    def move_if_scheduled(self, moves: Mapping[str, float]) -> None:
        """Give touches new due times, only those still waiting (not claimed or
        cancelled meanwhile)."""
        if moves:
            self.redis.zadd(self.keys.schedule, dict(moves), xx=True)

    def park(self, member: str, due: float) -> None:
        """Take a claimed touch of a paused sequence off the schedule, keeping its due
        time, so schedulers stop offering it until :meth:`unpark`."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.parked, {member: due})
        pipe.zrem(self.keys.schedule, member)
        pipe.zrem(self.keys.claimed, member)
        pipe.execute()

    def parked_count(self) -> int:
        return int(self.redis.zcard(self.keys.parked))

    def parked(self) -> list[tuple[str, float]]:
        """Every parked touch with its due time, earliest first."""
        raw = cast(
            list[tuple[bytes, float]], self.redis.zrange(self.keys.parked, 0, -1, withscores=True)
        )
        return [(member.decode(), float(due)) for member, due in raw]

    def unpark(self, touches: list[tuple[str, float]]) -> None:
        """Put parked touches back on the schedule at their due time (the scheduler's
        catch-up spreads those long overdue, as after downtime)."""
        if not touches:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.schedule, dict(touches))
        pipe.zrem(self.keys.parked, *[member for member, _ in touches])
        pipe.execute()

    def release_claim(self, member: str) -> None:
        """Drop a claim that needs no further work (stale or finished)."""
        self.redis.zrem(self.keys.claimed, member)

    def due_at(self, members: Iterable[str]) -> list[float | None]:
        """The due time of each touch, None for one not on the schedule."""
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.zscore(self.keys.schedule, member)
        return cast(list[float | None], pipe.execute())

    def due_or_claimed(self, member: str, now: float) -> bool:
        """Whether a touch is due by ``now`` or claimed (being sent right now)."""
        score = self.redis.zscore(self.keys.schedule, member)
        if score is not None:
            return float(score) <= now
        return bool(self.redis.zscore(self.keys.claimed, member))

    def pending(self, members: Iterable[str]) -> list[tuple[str, float]]:
        """Of these touches, those scheduled or claimed, with their due time (or lease)."""
        out = []
        for member in members:
            score = self.redis.zscore(self.keys.schedule, member)
            if score is None:
                score = self.redis.zscore(self.keys.claimed, member)
            if score is not None:
                out.append((member, float(score)))
        return sorted(out, key=lambda item: item[1])

    def overdue_count(self, before: float) -> int:
        return int(self.redis.zcount(self.keys.schedule, "-inf", before))

    def overdue_page(self, before: float, size: int) -> list[str]:
        """The first ``size`` touches due before ``before``, earliest first."""
        page = cast(
            list[bytes], self.redis.zrangebyscore(self.keys.schedule, "-inf", before, 0, size)
        )
        return [member.decode() for member in page]

    def first_due(self) -> float | None:
        first = cast(
            list[tuple[bytes, float]],
            self.redis.zrange(self.keys.schedule, 0, 0, withscores=True),
        )
        return float(first[0][1]) if first else None

    def stats(self) -> ScheduleStats:
        """Counts of scheduled and claimed touches and the next due time."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.schedule)
        pipe.zcard(self.keys.claimed)
        pipe.zrange(self.keys.schedule, 0, 0, withscores=True)
        scheduled, claimed, first = pipe.execute()
        return ScheduleStats(int(scheduled), int(claimed), float(first[0][1]) if first else None)

    def beat(self, scheduler_id: str, now: float) -> None:
        """A scheduler's heartbeat (for status and lag)."""
        self.redis.hset(self.keys.heartbeat, scheduler_id, now)

    def forget_scheduler(self, scheduler_id: str) -> None:
        self.redis.hdel(self.keys.heartbeat, scheduler_id)
