"""What ``nurture status`` (and ``/metrics``) report: queues, schedule, failures."""

from __future__ import annotations

from typing import Any

from worker.actors import EVENTS_QUEUE, TOUCHES_QUEUE
from worker.runtime import Runtime


def queue_depths(runtime: Runtime) -> dict[str, dict[str, int]]:
    """Ready, delayed and failed message counts per dramatiq queue."""
    return runtime.store.queue_depths(runtime.namespace, (EVENTS_QUEUE, TOUCHES_QUEUE))


def delivery_state(runtime: Runtime) -> dict[str, Any]:
    """Whether delivery runs, or why and since when it is paused (an account fault)."""
    pause = runtime.store.pauses.delivery()
    if pause is None:
        return {"paused": False}
    return {"paused": True, "reason": pause.reason, "since": pause.since}


def collect_status(runtime: Runtime) -> dict[str, Any]:
    """Everything an operator wants to see at a glance."""
    runtime.check_redis()
    store = runtime.store
    return {
        "redis_url": runtime.redis_url,
        "delivery": delivery_state(runtime),
        "queues": queue_depths(runtime),
        "schedule": store.schedule_stats(),
        "dead_letters": {"count": store.dead_letter_count(), "latest": store.dead_letters(5)},
        "unknown": store.unknown_outcomes(20),
        "suppressed": store.suppressed_count(),
        "stats": store.stats(),
        "counters": store.global_counters(),
    }
