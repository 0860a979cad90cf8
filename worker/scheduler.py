"""The scheduler: moves due touches from the durable schedule onto the queue.

Any number of schedulers may run (one per ``nurture worker``): claiming is one
atomic Lua step, so a touch is claimed once; a claim is a lease, so a scheduler that
dies after claiming loses nothing. The schedule is split into shards (one per lead
bucket, ``NURTURE_STATE_SHARDS``); the live schedulers share them out by their sorted
ids (scheduler ``i`` of ``S`` claims from shards ``n = i mod S``), and every
:data:`SWEEP_EVERY`-th tick each claims from all of them, so the shards of one that
died are covered before its heartbeat goes stale (docs/scale-notes.md, section 3).

After downtime, touches overdue by more than
``NURTURE_CATCHUP_AFTER`` are spread over ``NURTURE_CATCHUP_SPREAD`` in their
original order instead of being fired at once. The claim finds them: it takes each
shard's due touches earliest first and leaves those overdue past the threshold on the
schedule (``lua/claim_due.lua``), and a claim that met one runs the catch-up, which
counts and spreads the overdue touches of every shard. So whatever made them overdue
(downtime, events queued meanwhile or backfilled with an old ``occurred_at``, parked
touches put back, a shard of a scheduler that died) none is queued late, and a tick
that meets none reads no shard beyond its claims.

While delivery is paused by an account fault (see ``worker/store/pauses.py``) the
schedulers claim nothing: touches keep their place. One of them at a time probes the
account every ``NURTURE_PAUSE_PROBE_INTERVAL`` and ends the pause when it works; one
ERROR line a minute (from one scheduler of all) says why and since when.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq.errors
import redis

from worker.clock import Clock
from worker.enrollment import TouchRef
from worker.store import DeliveryPause, Store
from worker.store.counters import SCHEDULER_LAG
from worker.store.pauses import ALL_SEQUENCES

log = logging.getLogger(__name__)

#: Queues a batch of ``[touch id, due time]`` pairs (the ``send_touches`` actor's send).
EnqueueTouches = Callable[[list[list[Any]]], Any]
#: Checks whether the delivery account works: None when it does, else what is wrong.
Probe = Callable[[], str | None]
#: Returns the ids of the sequences paused now (``*`` for all), from files and commands.
PausedSequences = Callable[[], set[str]]
#: Seconds between the ERROR lines that repeat why delivery is paused.
PAUSE_LOG_EVERY = 60.0
#: Every this many ticks a scheduler claims from every shard, not only its own.
SWEEP_EVERY = 10
#: A scheduler counts as live while its heartbeat is this many intervals old (plus a second).
LIVE_TICKS = 3


@dataclass(frozen=True)
class SchedulerSettings:
    """The settings the scheduler reads."""

    batch: int  # NURTURE_SCHEDULER_BATCH: touches claimed per tick
    claim_lease: float
    interval: float
    catchup_after: float
    catchup_spread: float
    touches_per_message: int
    probe_interval: float = 15.0  # NURTURE_PAUSE_PROBE_INTERVAL
    unpark_every: float = 1.0  # seconds between looks for parked touches to put back


class Scheduler:
    """Claims due touches and queues them in batches.

    Args:
        store: The state store.
        clock: The time source.
        enqueue: Queues one batch of touches.
        settings: The settings the scheduler reads.
        probe: Checks whether the delivery account works again (while paused).
        paused_sequences: The sequences paused now; touches of the others that were
            parked while theirs was paused go back on the schedule.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        enqueue: EnqueueTouches,
        settings: SchedulerSettings,
        probe: Probe | None = None,
        paused_sequences: PausedSequences | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.enqueue = enqueue
        self.settings = settings
        self.probe = probe
        self.paused_sequences = paused_sequences
        self._unparked_at = 0.0
        self._ticks = 0
        #: Whether the last tick left due touches behind (a shard gave its whole limit).
        self.backlog = False
        self.id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Claim and queue what is due now; returns how many touches were queued."""
        now = self.clock.now().timestamp()
        pause = self.store.pauses.delivery()
        if pause is not None and not self.while_paused(pause):
            self.store.schedule.beat(self.id, now)
            return 0
        self.unpark()
        shards = self.my_shards(now)
        # NURTURE_SCHEDULER_BATCH spread over the shards, at least one touch from each.
        limit = max(1, math.ceil(self.settings.batch / len(shards)))
        late_before = now - self.settings.catchup_after
        per_shard = self.store.schedule.claim_shards(
            now, limit, self.settings.claim_lease, shards, late_before
        )
        self.backlog = any(len(claims) >= limit for claims in per_shard)
        found = [touch for claims in per_shard for touch in claims]
        # Those overdue past the threshold were left on the schedule for the catch-up.
        claimed = [(member, due) for member, due in found if due > late_before]
        size = self.settings.touches_per_message
        for start in range(0, len(claimed), size):
            chunk = claimed[start : start + size]
            # If this fails (Redis down) the claims stay leased and come back later.
            self.enqueue([[member, due] for member, due in chunk])
        if claimed:
            lag = now - min(due for _, due in claimed)
            self.store.counters.set_global(SCHEDULER_LAG, lag)
        if len(claimed) < len(found):
            # After the queueing: if this fails, the next claim meets them again.
            self.catch_up(now)
        self.store.schedule.beat(self.id, now)
        return len(claimed)

    def my_shards(self, now: float) -> list[int]:
        """The shards this tick claims from: this scheduler's share of them by its index
        among the live schedulers, or all of them every :data:`SWEEP_EVERY`-th tick; in
        an order rotated by the tick, so no shard always waits for the same one."""
        self._ticks += 1
        every = list(self.store.schedule.shards)
        if self._ticks % SWEEP_EVERY == 0:
            mine = every
        else:
            live_since = now - LIVE_TICKS * self.settings.interval - 1.0
            live = self.store.schedule.live_schedulers(live_since)
            if self.id not in live:
                live = sorted([*live, self.id])
            index = live.index(self.id)
            mine = every[index :: len(live)] or every
        turn = self._ticks % len(mine)
        return mine[turn:] + mine[:turn]

    def while_paused(self, pause: DeliveryPause) -> bool:
        """Say why delivery waits (once a minute) and probe (one scheduler at a time).

        Returns:
            True when the probe found the account working and ended the pause.
        """
        wall = self.clock.now().timestamp()
        if self.store.pauses.take_turn("log", PAUSE_LOG_EVERY):
            log.error(
                "delivery paused since %s (%d s): %s; touches keep their place; probing "
                "every %ss and resuming by itself",
                datetime.fromtimestamp(pause.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                max(0, int(wall - pause.since)),
                pause.reason,
                int(self.settings.probe_interval),
            )
        if self.probe is None or not self.store.pauses.take_turn(
            "probe", self.settings.probe_interval
        ):
            return False
        try:
            problem = self.probe()
        except Exception as exc:  # a probe that breaks must not stop the scheduler
            problem = f"probe failed: {exc!r}"
        if problem is not None:
            log.warning("delivery still paused: %s", problem)
            return False
        if self.store.pauses.resume_delivery():
            log.warning(
                "delivery resumed: the account works again after %d s paused (%s)",
                max(0, int(wall - pause.since)),
                pause.reason,
            )
        return True

    def unpark(self) -> int:
        """Put back on the schedule, at their due time, the parked touches of sequences
        no longer paused; the catch-up then spreads those long overdue.

        Looks at most every ``unpark_every`` seconds, and only when something is parked.
        """
        if self.paused_sequences is None:
            return 0
        wall = time.monotonic()
        if wall - self._unparked_at < self.settings.unpark_every:
            return 0
        self._unparked_at = wall
        schedule = self.store.schedule
        if schedule.parked_count() == 0:
            return 0
        paused = self.paused_sequences()
        if ALL_SEQUENCES in paused:
            return 0
        back = [
            (m, due) for m, due in schedule.parked() if TouchRef.parse(m).sequence not in paused
        ]
        schedule.unpark(back)
        if back:
            log.info("resumed: %d paused touches back on the schedule at their due time", len(back))
        return len(back)

    def catch_up(self, now: float) -> int:
        """Spread touches overdue by more than the catch-up threshold (downtime backlog)."""
        threshold = now - self.settings.catchup_after
        schedule = self.store.schedule
        total = schedule.overdue_count(threshold)
        if total == 0:
            return 0
        spread = self.settings.catchup_spread
        moved = 0
        # Earliest first over every shard; each gets its slot of the one spread.
        new_due: dict[str, float] = {}
        for member in schedule.overdue(threshold, new_due):
            new_due[member] = now + spread * moved / total
            moved += 1
            if moved == total:
                # Those written since the count (events still being applied) would
                # land past the spread: the next claim meets them and spreads them.
                break
        schedule.move_if_scheduled(new_due)  # the moves of the pages read last
        log.warning(
            "catch-up: %d touches were overdue by more than %ss; spread over the next %ss",
            moved,
            int(self.settings.catchup_after),
            int(spread),
        )
        self.store.counters.count_global("caught_up", moved)
        return moved

    def run(self) -> None:
        """Tick until stopped; back-to-back while there is a backlog."""
        while not self._stop.is_set():
            try:
                queued = self.tick()
            except redis.RedisError as exc:
                log.warning("scheduler: Redis unavailable (%s); retrying", exc)
                self._stop.wait(1.0)
                continue
            except dramatiq.errors.ConnectionError as exc:
                # RabbitMQ (NURTURE_BROKER_URL) down: the claims stay leased and come
                # back after the lease; keep ticking so sending resumes when it returns.
                log.warning("scheduler: message broker unavailable (%s); retrying", exc)
                self._stop.wait(1.0)
                continue
            if not queued or not self.backlog:
                self._stop.wait(self.settings.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"scheduler-{self.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.schedule.forget_scheduler(self.id)
