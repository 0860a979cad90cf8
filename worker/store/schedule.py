"""The durable schedule: touch id -> due time, and the claims schedulers hold on it.

The schedule is split into one shard per lead bucket (``Keys.schedule(n)``, with its
claims ``Keys.claimed(n)``): a touch lives in the shard of its lead's bucket, in the
slot of the lead's own keys, so the ``advance`` script and the enrollment's transaction
stay single-slot on a Redis Cluster and no one key carries the whole schedule
(docs/scale-notes.md, section 3). Readers over all shards pipeline one command per
shard (one round trip per Redis node).

Entering and leaving the schedule for an enrollment's touch happens with the
enrollment (``EnrollmentStore.write``, the ledger's ``advance`` script); this module
moves touches in time: claims, reschedules, the cap's hold-backs and the catch-up.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.commands.core import Script

from worker.enrollment import TouchRef
from worker.store.keys import Keys
from worker.store.scripts import run_pipelined
from worker.store.timeline import add_to


@dataclass(frozen=True)
class ScheduleStats:
    scheduled: int
    claimed: int
    next_due: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"scheduled": self.scheduled, "claimed": self.claimed, "next_due": self.next_due}


class ScheduleStore:
    """The schedule and claimed zsets (one shard per bucket), and the schedulers'
    heartbeats."""

    def __init__(self, client: redis.Redis, keys: Keys, claim_due: Script) -> None:
        self.redis = client
        self.keys = keys
        self._claim_due = claim_due

    @property
    def shards(self) -> range:
        return range(self.keys.shards)

    def bucket_of(self, member: str) -> int:
        """The shard of a touch: its lead's bucket (the lead id ends the touch id)."""
        return self.keys.bucket(TouchRef.parse(member).lead_id)

    def _per_shard(self, command: Callable[[Any, int], Any]) -> list[Any]:
        """``command(pipe, shard)`` for every shard, pipelined; the answers by shard."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            command(pipe, shard)
        return pipe.execute()

    def claim_due(
        self, now: float, limit: int, lease: float, shards: Iterable[int] | None = None
    ) -> list[tuple[str, float]]:
        """Atomically claim up to ``limit`` due touches from each of ``shards`` (every
        shard by default), see ``lua/claim_due.lua``: one script call per shard, all
        in one pipelined round trip."""
        return [
            touch for claimed in self.claim_shards(now, limit, lease, shards) for touch in claimed
        ]

    def claim_shards(
        self,
        now: float,
        limit: int,
        lease: float,
        shards: Iterable[int] | None = None,
        late_before: float | None = None,
    ) -> list[list[tuple[str, float]]]:
        """:meth:`claim_due`, the claims of each shard apart (in the order given).

        With ``late_before``, the touches due at or before it (overdue past the
        catch-up threshold) come back too, earliest first, but stay on the schedule
        unclaimed, for the catch-up to spread (the caller tells them by their due time).
        """
        args: list[float] = [now, limit, now + lease]
        if late_before is not None:
            args.append(late_before)
        calls = [
            ([self.keys.schedule(n), self.keys.claimed(n)], args)
            for n in (self.shards if shards is None else shards)
        ]
        return [
            [(flat[i].decode(), float(flat[i + 1])) for i in range(0, len(flat), 2)]
            for flat in run_pipelined(self.redis, self._claim_due, calls)
        ]

    def reschedule(self, member: str, when: float, note: str = "") -> None:
        """Put a claimed touch back on the schedule at ``when``; ``note``, if given, goes
        on the lead's timeline in the same round trip (why the touch waits)."""
        shard = self.bucket_of(member)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.schedule(shard), {member: when})
        pipe.zrem(self.keys.claimed(shard), member)
        if note:
            add_to(pipe, self.keys, TouchRef.parse(member).lead_id, [note])
        pipe.execute()

    def move_if_scheduled(self, moves: Mapping[str, float]) -> None:
        """Give touches new due times, only those still waiting (not claimed or
        cancelled meanwhile)."""
        if not moves:
            return
        by_shard: dict[int, dict[str, float]] = defaultdict(dict)
        for member, due in moves.items():
            by_shard[self.bucket_of(member)][member] = due
        pipe = self.redis.pipeline(transaction=False)
        for shard, shard_moves in by_shard.items():
            pipe.zadd(self.keys.schedule(shard), shard_moves, xx=True)
        pipe.execute()

    def park(self, member: str, due: float) -> None:
        """Take a claimed touch of a paused sequence off the schedule, keeping its due
        time, so schedulers stop offering it until :meth:`unpark`."""
        shard = self.bucket_of(member)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.parked(shard), {member: due})
        pipe.zrem(self.keys.schedule(shard), member)
        pipe.zrem(self.keys.claimed(shard), member)
        pipe.execute()

    def parked_count(self) -> int:
        return sum(int(n) for n in self._per_shard(lambda p, n: p.zcard(self.keys.parked(n))))

    def parked(self) -> list[tuple[str, float]]:
        """Every parked touch with its due time, earliest first."""
        shards = self._per_shard(lambda p, n: p.zrange(self.keys.parked(n), 0, -1, withscores=True))
        return sorted(
            ((member.decode(), float(due)) for shard in shards for member, due in shard),
            key=lambda item: (item[1], item[0]),
        )

    def unpark(self, touches: list[tuple[str, float]]) -> None:
        """Put parked touches back on the schedule at their due time (the scheduler's
        catch-up spreads those long overdue, as after downtime): one transaction per
        shard."""
        by_shard: dict[int, dict[str, float]] = defaultdict(dict)
        for member, due in touches:
            by_shard[self.bucket_of(member)][member] = due
        for shard, back in by_shard.items():
            pipe = self.redis.pipeline(transaction=True)
            pipe.zadd(self.keys.schedule(shard), back)
            pipe.zrem(self.keys.parked(shard), *back)
            pipe.execute()

    def release_claim(self, member: str) -> None:
        """Drop a claim that needs no further work (stale or finished)."""
        self.redis.zrem(self.keys.claimed(self.bucket_of(member)), member)

    def due_at(self, members: Iterable[str]) -> list[float | None]:
        """The due time of each touch, None for one not on the schedule."""
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.zscore(self.keys.schedule(self.bucket_of(member)), member)
        return cast(list[float | None], pipe.execute())

    def due_or_claimed(self, member: str, now: float) -> bool:
        """Whether a touch is due by ``now`` or claimed (being sent right now)."""
        shard = self.bucket_of(member)
        score = self.redis.zscore(self.keys.schedule(shard), member)
        if score is not None:
            return float(score) <= now
        return bool(self.redis.zscore(self.keys.claimed(shard), member))

    def pending(self, members: Iterable[str]) -> list[tuple[str, float]]:
        """Of these touches, those scheduled or claimed, with their due time (or lease)."""
        out = []
        for member in members:
            shard = self.bucket_of(member)
            score = self.redis.zscore(self.keys.schedule(shard), member)
            if score is None:
                score = self.redis.zscore(self.keys.claimed(shard), member)
            if score is not None:
                out.append((member, float(score)))
        return sorted(out, key=lambda item: item[1])

    def overdue_count(self, before: float) -> int:
        """Touches due before ``before``, over every shard."""
        counts = self._per_shard(lambda p, n: p.zcount(self.keys.schedule(n), "-inf", before))
        return sum(int(count) for count in counts)

    def overdue(self, before: float, moved: dict[str, float], page: int = 1000) -> Iterator[str]:
        """Every touch due before ``before``, earliest first over all shards (a merge of
        the shards' pages). The caller puts each touch it takes into ``moved`` with its
        new due time (past ``before``); a shard's moves are written (and taken out of
        ``moved``) before its next page is read, so paging never skips: moved touches
        leave the range."""
        merged = heapq.merge(  # as one zset would order them: by due time, then id
            *(self._overdue_shard(n, before, moved, page) for n in self.shards),
            key=lambda item: (item[1], item[0]),
        )
        return (member for member, _ in merged)

    def _overdue_shard(
        self, shard: int, before: float, moved: dict[str, float], page: int
    ) -> Iterator[tuple[str, float]]:
        key = self.keys.schedule(shard)
        while True:
            raw = cast(
                list[tuple[bytes, float]],
                self.redis.zrangebyscore(key, "-inf", before, 0, page, withscores=True),
            )
            if not raw:
                return
            taken = [member.decode() for member, _ in raw]
            for member, due in zip(taken, raw, strict=True):
                yield member, float(due[1])
            # heapq.merge asks for our next item only after the caller handled this one.
            moves = {m: moved.pop(m) for m in taken if m in moved}
            if moves:
                self.redis.zadd(key, moves, xx=True)
            if len(moves) < len(taken):
                return  # the caller stopped moving: the same page would come back

    def first_due(self) -> float | None:
        """The earliest due time over every shard."""
        firsts = self._per_shard(
            lambda p, n: p.zrange(self.keys.schedule(n), 0, 0, withscores=True)
        )
        return min((float(first[0][1]) for first in firsts if first), default=None)

    def due_count(self, now: float) -> int:
        """Touches due by ``now`` (not claimed), over every shard."""
        return self.overdue_count(now)

    def entries(self) -> list[tuple[str, float]]:
        """Every scheduled touch with its due time, earliest first (for tests and the
        migration's counts: reads every shard whole)."""
        shards = self._per_shard(
            lambda p, n: p.zrange(self.keys.schedule(n), 0, -1, withscores=True)
        )
        return sorted(
            ((member.decode(), float(due)) for shard in shards for member, due in shard),
            key=lambda item: (item[1], item[0]),
        )

    def stats(self) -> ScheduleStats:
        """Counts of scheduled and claimed touches and the next due time, over every shard."""

        def three(pipe: Any, n: int) -> None:
            pipe.zcard(self.keys.schedule(n))
            pipe.zcard(self.keys.claimed(n))
            pipe.zrange(self.keys.schedule(n), 0, 0, withscores=True)

        flat = self._per_shard(three)
        firsts = [float(first[0][1]) for first in flat[2::3] if first]
        return ScheduleStats(
            sum(int(n) for n in flat[0::3]),
            sum(int(n) for n in flat[1::3]),
            min(firsts, default=None),
        )

    def beat(self, scheduler_id: str, now: float) -> None:
        """A scheduler's heartbeat (for status, lag and sharing the shards)."""
        self.redis.hset(self.keys.heartbeat, scheduler_id, now)

    def live_schedulers(self, since: float) -> list[str]:
        """Ids of the schedulers whose last heartbeat is at ``since`` or later, sorted."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.heartbeat))
        return sorted(k.decode() for k, v in raw.items() if float(v) >= since)

    def forget_scheduler(self, scheduler_id: str) -> None:
        self.redis.hdel(self.keys.heartbeat, scheduler_id)
