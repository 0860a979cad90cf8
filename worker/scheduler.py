"""The scheduler: moves due touches from the durable schedule onto the queue.

Any number of schedulers may run (one per ``nurture worker``): claiming is one
atomic Lua step, so a touch is claimed once; a claim is a lease, so a scheduler that
dies after claiming loses nothing. After downtime, touches overdue by more than
``NURTURE_CATCHUP_AFTER`` are spread over ``NURTURE_CATCHUP_SPREAD`` in their
original order instead of being fired at once.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq.errors
import redis

from worker.clock import Clock
from worker.store import Store
from worker.store.counters import SCHEDULER_LAG

log = logging.getLogger(__name__)

#: Queues a batch of ``[touch id, due time]`` pairs (the ``send_touches`` actor's send).
EnqueueTouches = Callable[[list[list[Any]]], Any]


@dataclass(frozen=True)
class SchedulerSettings:
    """The settings the scheduler reads."""

    batch: int  # NURTURE_SCHEDULER_BATCH: touches claimed per tick
    claim_lease: float
    interval: float
    catchup_after: float
    catchup_spread: float
    touches_per_message: int


class Scheduler:
    """Claims due touches and queues them in batches.

    Args:
        store: The state store.
        clock: The time source.
        enqueue: Queues one batch of touches.
        settings: The settings the scheduler reads.
    """

    def __init__(
        self, store: Store, clock: Clock, enqueue: EnqueueTouches, settings: SchedulerSettings
    ) -> None:
        self.store = store
        self.clock = clock
        self.enqueue = enqueue
        self.settings = settings
        self.id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Claim and queue what is due now; returns how many touches were queued."""
        now = self.clock.now().timestamp()
        self.catch_up(now)
        claimed = self.store.schedule.claim_due(now, self.settings.batch, self.settings.claim_lease)
        size = self.settings.touches_per_message
        for start in range(0, len(claimed), size):
            chunk = claimed[start : start + size]
            # If this fails (Redis down) the claims stay leased and come back later.
            self.enqueue([[member, due] for member, due in chunk])
        if claimed:
            lag = now - min(due for _, due in claimed)
            self.store.counters.set_global(SCHEDULER_LAG, lag)
        self.store.schedule.beat(self.id, now)
        return len(claimed)

    def catch_up(self, now: float) -> int:
        """Spread touches overdue by more than the catch-up threshold (downtime backlog)."""
        threshold = now - self.settings.catchup_after
        schedule = self.store.schedule
        total = schedule.overdue_count(threshold)
        if total == 0:
            return 0
        spread = self.settings.catchup_spread
        moved = 0
        while page := schedule.overdue_page(threshold, 1000):
            schedule.move_if_scheduled(
                {member: now + spread * (moved + i) / total for i, member in enumerate(page)}
            )
            moved += len(page)
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
            if queued < self.settings.batch:
                self._stop.wait(self.settings.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"scheduler-{self.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.schedule.forget_scheduler(self.id)
