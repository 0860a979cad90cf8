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
from typing import cast

import redis

from worker.runtime import Runtime

log = logging.getLogger(__name__)


class Scheduler:
    """Claims due touches and queues them in batches."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.store = runtime.store
        self.id = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Claim and queue what is due now; returns how many touches were queued."""
        now = self.rt.clock.now().timestamp()
        self.catch_up(now)
        claimed = self.store.claim_due(
            now, self.rt.settings.scheduler_batch, self.rt.settings.claim_lease
        )
        size = self.rt.tuning.touches_per_message
        for start in range(0, len(claimed), size):
            chunk = claimed[start : start + size]
            # If this fails (Redis down) the claims stay leased and come back later.
            self.rt.actors.send_touches.send([[member, due] for member, due in chunk])
        if claimed:
            lag = now - min(due for _, due in claimed)
            self.store.redis.hset(self.store.keys.counters, "scheduler_lag_last", lag)
        self.store.redis.hset(self.store.keys.heartbeat, self.id, now)
        return len(claimed)

    def catch_up(self, now: float) -> int:
        """Spread touches overdue by more than the catch-up threshold (downtime backlog)."""
        threshold = now - self.rt.settings.catchup_after
        key = self.store.keys.schedule
        total = int(self.store.redis.zcount(key, "-inf", threshold))
        if total == 0:
            return 0
        spread = self.rt.settings.catchup_spread
        moved = 0
        while True:
            page = cast(
                list[tuple[bytes, float]],
                self.store.redis.zrangebyscore(key, "-inf", threshold, 0, 1000, withscores=True),
            )
            if not page:
                break
            # XX: only touches still scheduled (not claimed or cancelled meanwhile).
            self.store.redis.zadd(
                key,
                {member: now + spread * (moved + i) / total for i, (member, _) in enumerate(page)},
                xx=True,
            )
            moved += len(page)
        log.warning(
            "catch-up: %d touches were overdue by more than %ss; spread over the next %ss",
            moved,
            int(self.rt.settings.catchup_after),
            int(spread),
        )
        self.store.count_global("caught_up", moved)
        return moved

    def run(self) -> None:
        """Tick until stopped; back-to-back while there is a backlog."""
        interval = self.rt.settings.scheduler_interval
        while not self._stop.is_set():
            try:
                queued = self.tick()
            except redis.RedisError as exc:
                log.warning("scheduler: Redis unavailable (%s); retrying", exc)
                self._stop.wait(1.0)
                continue
            if queued < self.rt.settings.scheduler_batch:
                self._stop.wait(interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"scheduler-{self.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.redis.hdel(self.store.keys.heartbeat, self.id)
