"""What ``nurture status`` (and ``/metrics``) report: queues, schedule, failures."""

from __future__ import annotations

from typing import Any

from worker.actors import EVENTS_QUEUE, TOUCHES_QUEUE
from worker.crm.hubspot_sync import FETCH_QUEUE
from worker.runtime import Runtime


def queue_depths(runtime: Runtime) -> dict[str, dict[str, int]]:
    """Ready, delayed and failed message counts per dramatiq queue."""
    return runtime.store.queue_depths(runtime.namespace, (EVENTS_QUEUE, TOUCHES_QUEUE, FETCH_QUEUE))


def collect_status(runtime: Runtime) -> dict[str, Any]:
    """Everything an operator wants to see at a glance."""
    runtime.check_redis()
    store = runtime.store
    return {
        "redis_url": runtime.redis_url,
        "queues": queue_depths(runtime),
        "schedule": store.schedule_stats(),
        "dead_letters": {"count": store.dead_letter_count(), "latest": store.dead_letters(5)},
        "unknown": store.unknown_outcomes(20),
        "suppressed": store.suppressed_count(),
        "stats": store.stats(),
        "counters": store.global_counters(),
    }
